// Package remote is the command provider's `command:remote:Command`: a script run over SSH when
// the resource is created, updated or deleted, with the input and output names of the
// pulumi-command SDK so that its Python package drives this provider unchanged.
package remote

import (
	"context"
	"fmt"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Command runs `create` once, `update` (or `create` again) when its inputs change and `delete`
// when it is removed. A change of `triggers` replaces it.
type Command struct{}

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

type CommandInputs struct {
	Triggers *[]any   `pulumi:"triggers,optional" provider:"replaceOnChanges"`
	Create   *string  `pulumi:"create,optional"`
	Update   *string  `pulumi:"update,optional"`
	Delete   *string  `pulumi:"delete,optional"`
	Stdin    *string  `pulumi:"stdin,optional"`
	Logging  *Logging `pulumi:"logging,optional"`
	// Secret as a whole: it carries the private key, and a partly secret object diffs badly.
	Connection             Connection        `pulumi:"connection" provider:"secret"`
	Environment            map[string]string `pulumi:"environment,optional"`
	AddPreviousOutputInEnv *bool             `pulumi:"addPreviousOutputInEnv,optional"`
}

func (c *CommandInputs) Annotate(a infer.Annotator) {
	a.Describe(&c.Triggers, "Values whose change replaces the resource: `delete`, then `create`.")
	a.Describe(&c.Create, "The script run once when the resource is created.")
	a.Describe(&c.Update, "The script run when any input but `triggers` changes; `create` when unset.")
	a.Describe(&c.Delete, "The script run when the resource is deleted.")
	a.Describe(&c.Stdin, "Fed to the script's standard input.")
	a.Describe(&c.Logging, "Which streams go to the engine's log; both are captured as outputs. Default: both.")
	a.Describe(&c.Connection, "How to reach the host.")
	a.Describe(&c.Environment, "Environment variables, sent as SSH `env` requests: sshd must accept them "+
		"(AcceptEnv) or the run fails.")
	a.Describe(&c.AddPreviousOutputInEnv, "Send the previous run's output as PULUMI_COMMAND_STDOUT and "+
		"PULUMI_COMMAND_STDERR (a refusal only warns). Default: true.")
}

type CommandOutputs struct {
	CommandInputs
	Stdout string `pulumi:"stdout"`
	Stderr string `pulumi:"stderr"`
}

func (c *CommandOutputs) Annotate(a infer.Annotator) {
	a.Describe(&c.Stdout, "The standard output of the last run, without its final newline.")
	a.Describe(&c.Stderr, "The standard error of the last run, without its final newline.")
}

var (
	_ infer.CustomCheck[CommandInputs]                  = (*Command)(nil)
	_ infer.CustomUpdate[CommandInputs, CommandOutputs] = (*Command)(nil)
	_ infer.CustomDelete[CommandOutputs]                = (*Command)(nil)
)

func (c *Command) Annotate(a infer.Annotator) {
	a.Describe(c, "A script run on a remote host over SSH as the resource is created, updated or deleted.")
}

// Check refuses what this provider does not implement, naming the field, before anything runs.
func (*Command) Check(ctx context.Context, req infer.CheckRequest) (infer.CheckResponse[CommandInputs], error) {
	inputs, failures, err := infer.DefaultCheck[CommandInputs](ctx, req.NewInputs)
	if err != nil || len(failures) > 0 {
		return infer.CheckResponse[CommandInputs]{Inputs: inputs, Failures: failures}, err
	}
	failures = append(failures, inputs.Connection.unsupported("connection")...)
	return infer.CheckResponse[CommandInputs]{Inputs: inputs, Failures: failures}, nil
}

func (*Command) Create(ctx context.Context, req infer.CreateRequest[CommandInputs]) (infer.CreateResponse[CommandOutputs], error) {
	state := CommandOutputs{CommandInputs: req.Inputs}
	id, err := resource.NewUniqueHex(req.Name, 8, 0)
	if err != nil || req.DryRun || req.Inputs.Create == nil {
		return infer.CreateResponse[CommandOutputs]{ID: id, Output: state}, err
	}
	err = state.run(ctx, *req.Inputs.Create)
	return infer.CreateResponse[CommandOutputs]{ID: id, Output: state}, err
}

func (*Command) Update(ctx context.Context, req infer.UpdateRequest[CommandInputs, CommandOutputs]) (infer.UpdateResponse[CommandOutputs], error) {
	state := CommandOutputs{CommandInputs: req.Inputs, Stdout: req.State.Stdout, Stderr: req.State.Stderr}
	script := req.Inputs.Update
	if script == nil {
		script = req.Inputs.Create
	}
	if req.DryRun || script == nil {
		return infer.UpdateResponse[CommandOutputs]{Output: state}, nil
	}
	err := state.run(ctx, *script)
	return infer.UpdateResponse[CommandOutputs]{Output: state}, err
}

func (*Command) Delete(ctx context.Context, req infer.DeleteRequest[CommandOutputs]) (infer.DeleteResponse, error) {
	if req.State.Delete == nil {
		return infer.DeleteResponse{}, nil
	}
	state := req.State
	return infer.DeleteResponse{}, state.run(ctx, *state.Delete)
}

// run executes script in one SSH session and records its output; a non-zero exit fails the step
// with everything the script printed.
func (c *CommandOutputs) run(ctx context.Context, script string) error {
	client, err := c.Connection.dial(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	previous := map[string]string{}
	if c.AddPreviousOutputInEnv == nil || *c.AddPreviousOutputInEnv {
		previous = map[string]string{"PULUMI_COMMAND_STDOUT": c.Stdout, "PULUMI_COMMAND_STDERR": c.Stderr}
	}
	stdout, stderr, err := runSession(ctx, client, session{
		script:      script,
		stdin:       c.Stdin,
		environment: c.Environment,
		previous:    previous,
		logStdout:   c.Logging.logsStdout(),
		logStderr:   c.Logging.logsStderr(),
	})
	if err != nil {
		return fmt.Errorf("running %q: %w", script, err)
	}
	c.Stdout, c.Stderr = stdout, stderr
	return nil
}

// warn is the engine's warning, shared by the session code.
func warn(ctx context.Context, format string, args ...any) {
	p.GetLogger(ctx).Warningf(format, args...)
}
