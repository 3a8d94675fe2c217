package remote

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
)

// Logging says which of the script's streams go to the engine's log; both are always captured.
type Logging string

const (
	LogStdout          Logging = "stdout"
	LogStderr          Logging = "stderr"
	LogStdoutAndStderr Logging = "stdoutAndStderr"
	LogNone            Logging = "none"
)

func (Logging) Values() []infer.EnumValue[Logging] {
	return []infer.EnumValue[Logging]{
		{Name: string(LogStdout), Value: LogStdout, Description: "Log stdout only."},
		{Name: string(LogStderr), Value: LogStderr, Description: "Log stderr only."},
		{Name: string(LogStdoutAndStderr), Value: LogStdoutAndStderr, Description: "Log both streams."},
		{Name: string(LogNone), Value: LogNone, Description: "Log neither stream."},
	}
}

func (l *Logging) logsStdout() bool { return l == nil || *l == LogStdout || *l == LogStdoutAndStderr }
func (l *Logging) logsStderr() bool { return l == nil || *l == LogStderr || *l == LogStdoutAndStderr }

const (
	previousStdout = "PULUMI_COMMAND_STDOUT"
	previousStderr = "PULUMI_COMMAND_STDERR"
)

// run executes script in one SSH session and records its output; a non-zero exit fails the step
// with everything the script printed.
func (c *CommandOutputs) run(ctx context.Context, script string) error {
	client, err := c.Connection.dial(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return err
	}
	defer session.Close()

	for name, value := range c.Environment {
		if err := session.Setenv(name, value); err != nil {
			p.GetLogger(ctx).Error(refusedVariable(name))
			return fmt.Errorf("could not set environment variable %q: %w", name, err)
		}
	}
	if c.AddPreviousOutputInEnv == nil || *c.AddPreviousOutputInEnv {
		// The previous output is offered, and a refusal only warns.
		for _, previous := range [][2]string{{previousStdout, c.Stdout}, {previousStderr, c.Stderr}} {
			if previous[1] != "" && session.Setenv(previous[0], previous[1]) != nil {
				p.GetLogger(ctx).Warning(refusedVariable(previous[0]))
			}
		}
	}
	if c.Stdin != nil && len(*c.Stdin) > 0 {
		session.Stdin = strings.NewReader(*c.Stdin)
	}

	var stdout, stderr, combined bytes.Buffer
	logReader, logWriter := io.Pipe()
	stdoutWriters := []io.Writer{&stdout, &combined}
	if c.Logging.logsStdout() {
		stdoutWriters = append(stdoutWriters, logWriter)
	}
	stderrWriters := []io.Writer{&stderr, &combined}
	if c.Logging.logsStderr() {
		stderrWriters = append(stderrWriters, logWriter)
	}
	session.Stdout = io.MultiWriter(stdoutWriters...)
	session.Stderr = io.MultiWriter(stderrWriters...)
	logged := make(chan struct{})
	go logLines(ctx, logReader, logged)

	err = session.Run(script)
	_ = logWriter.Close()
	<-logged
	if err != nil {
		return fmt.Errorf("%w: running %q:\n%s", err, script, combined.String())
	}
	c.Stdout = strings.TrimSuffix(stdout.String(), "\n")
	c.Stderr = strings.TrimSuffix(stderr.String(), "\n")
	return nil
}

// logLines sends each line of the logged streams to the engine as a status message. Like
// upstream's, it stops at the first line longer than bufio's default limit (64 KiB), and the
// script's output then stalls.
func logLines(ctx context.Context, lines io.Reader, done chan<- struct{}) {
	defer close(done)
	scanner := bufio.NewScanner(lines)
	for scanner.Scan() {
		p.GetLogger(ctx).InfoStatus(scanner.Text())
	}
}

func refusedVariable(name string) string {
	return fmt.Sprintf(`Unable to set '%s'. This only works if your SSH server is configured to accept
	these variables via AcceptEnv. Alternatively, if a Bash-like shell runs the command on the remote host, you could
	prefix the command itself with the variables in the form 'VAR=value command'`, name)
}
