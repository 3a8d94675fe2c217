package remote

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/retry"
	"golang.org/x/crypto/ssh"
)

// Connection holds the pulumi-command SDK's connection fields. `proxy` and `agentSocketPath` are
// accepted so the SDK's objects decode, and refused by Check: this provider dials directly with
// the given key or password.
type Connection struct {
	Host               string         `pulumi:"host"`
	Port               *float64       `pulumi:"port,optional"`
	User               *string        `pulumi:"user,optional"`
	Password           *string        `pulumi:"password,optional" provider:"secret"`
	PrivateKey         *string        `pulumi:"privateKey,optional" provider:"secret"`
	PrivateKeyPassword *string        `pulumi:"privateKeyPassword,optional" provider:"secret"`
	HostKey            *string        `pulumi:"hostKey,optional"`
	DialErrorLimit     *int           `pulumi:"dialErrorLimit,optional"`
	PerDialTimeout     *int           `pulumi:"perDialTimeout,optional"`
	AgentSocketPath    *string        `pulumi:"agentSocketPath,optional"`
	Proxy              map[string]any `pulumi:"proxy,optional"`
}

const (
	defaultDialErrorLimit = 10
	defaultPerDialTimeout = 15
	unlimitedDialErrors   = -1
)

func (c *Connection) Annotate(a infer.Annotator) {
	a.Describe(&c.Host, "The host's address.")
	a.Describe(&c.Port, "The SSH port. Default: 22.")
	a.SetDefault(&c.Port, 22)
	a.Describe(&c.User, "The user to log in as. Default: root.")
	a.SetDefault(&c.User, "root")
	a.Describe(&c.Password, "A password, offered after the key.")
	a.Describe(&c.PrivateKey, "An SSH private key, in OpenSSH or PEM format.")
	a.Describe(&c.PrivateKeyPassword, "The passphrase of an encrypted private key.")
	a.Describe(&c.HostKey, "The host's public key (authorized_keys format): the only key accepted, "+
		"and the only algorithm offered. Unset: any host key is accepted.")
	a.Describe(&c.DialErrorLimit, "Failed dials before giving up; -1: no limit. Default: 10.")
	a.SetDefault(&c.DialErrorLimit, defaultDialErrorLimit)
	a.Describe(&c.PerDialTimeout, "Seconds each dial may take; 0: no limit. Default: 15.")
	a.SetDefault(&c.PerDialTimeout, defaultPerDialTimeout)
	a.Describe(&c.AgentSocketPath, "Not supported: refused at check.")
	a.Describe(&c.Proxy, "Not supported: refused at check.")
}

// unsupported names what cannot work; unknown values (a preview's) decode as unset and pass.
func (c Connection) unsupported(path string) []p.CheckFailure {
	var failures []p.CheckFailure
	if c.AgentSocketPath != nil {
		failures = append(failures, p.CheckFailure{Property: path + ".agentSocketPath",
			Reason: "an SSH agent is not supported by this command provider; pass privateKey"})
	}
	if len(c.Proxy) > 0 {
		failures = append(failures, p.CheckFailure{Property: path + ".proxy",
			Reason: "a proxy (bastion) connection is not supported by this command provider"})
	}
	if c.HostKey != nil {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(*c.HostKey)); err != nil {
			failures = append(failures, p.CheckFailure{Property: path + ".hostKey",
				Reason: fmt.Sprintf("not a public key in authorized_keys format: %v", err)})
		}
	}
	return failures
}

func (c Connection) clientConfig() (*ssh.ClientConfig, error) {
	config := &ssh.ClientConfig{
		User:            valueOr(c.User, "root"),
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), //nolint:gosec // only when no hostKey is given
		Timeout:         time.Duration(valueOr(c.PerDialTimeout, defaultPerDialTimeout)) * time.Second,
	}
	if c.HostKey != nil {
		hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(*c.HostKey))
		if err != nil {
			return nil, fmt.Errorf("connection.hostKey: %w", err)
		}
		config.HostKeyCallback = ssh.FixedHostKey(hostKey)
		// Offer only the pinned key's algorithm, so the host cannot answer with another of its keys.
		config.HostKeyAlgorithms = []string{hostKey.Type()}
	}
	if c.PrivateKey != nil {
		var signer ssh.Signer
		var err error
		if c.PrivateKeyPassword != nil {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(*c.PrivateKey), []byte(*c.PrivateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(*c.PrivateKey))
		}
		if err != nil {
			return nil, fmt.Errorf("connection.privateKey: %w", err)
		}
		config.Auth = append(config.Auth, ssh.PublicKeys(signer))
	}
	if c.Password != nil {
		password := *c.Password
		config.Auth = append(config.Auth, ssh.Password(password),
			ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = password
				}
				return answers, nil
			}))
	}
	return config, nil
}

// dial retries with Pulumi's own backoff (250 ms doubling to 5 s): a new server's sshd comes up
// some seconds after Hetzner reports it running.
func (c Connection) dial(ctx context.Context) (*ssh.Client, error) {
	config, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	endpoint := net.JoinHostPort(c.Host, strconv.Itoa(int(valueOr(c.Port, 22))))
	limit := valueOr(c.DialErrorLimit, defaultDialErrorLimit)
	var client *ssh.Client
	var lastErr error
	done, _, err := retry.Until(ctx, retry.Acceptor{
		Accept: func(try int, _ time.Duration) (bool, any, error) {
			client, lastErr = ssh.Dial("tcp", endpoint, config)
			if lastErr == nil {
				return true, nil, nil
			}
			if limit != unlimitedDialErrors && try+1 >= limit {
				return true, nil, fmt.Errorf("dialing %s: %d failed attempts, the last: %w", endpoint, try+1, lastErr)
			}
			p.GetLogger(ctx).InfoStatusf("dialing %s: attempt %d failed, retrying", endpoint, try+1)
			return false, nil, nil
		},
	})
	if err != nil {
		return nil, err
	}
	if !done {
		return nil, errors.Join(ctx.Err(), lastErr)
	}
	return client, nil
}

type session struct {
	script      string
	stdin       *string
	environment map[string]string
	// The previous run's output: sent only when non-empty, and a refusal only warns.
	previous             map[string]string
	logStdout, logStderr bool
}

// runSession runs one `exec` request and returns stdout and stderr without their final newline.
func runSession(ctx context.Context, client *ssh.Client, s session) (string, string, error) {
	sshSession, err := client.NewSession()
	if err != nil {
		return "", "", err
	}
	defer sshSession.Close()
	for name, value := range s.environment {
		if err := sshSession.Setenv(name, value); err != nil {
			return "", "", fmt.Errorf("sshd refused environment variable %s (it needs AcceptEnv): %w", name, err)
		}
	}
	for name, value := range s.previous {
		if value == "" {
			continue
		}
		if err := sshSession.Setenv(name, value); err != nil {
			warn(ctx, "sshd refused environment variable %s (it needs AcceptEnv); the script runs without it", name)
		}
	}
	if s.stdin != nil {
		sshSession.Stdin = strings.NewReader(*s.stdin)
	}
	var stdout, stderr, combined bytes.Buffer
	var combinedLock sync.Mutex
	logReader, logWriter := io.Pipe()
	stream := func(buffer *bytes.Buffer, logged bool) io.Writer {
		writers := []io.Writer{buffer, lockedWriter{&combined, &combinedLock}}
		if logged {
			writers = append(writers, lockedWriter{logWriter, &combinedLock})
		}
		return io.MultiWriter(writers...)
	}
	sshSession.Stdout = stream(&stdout, s.logStdout)
	sshSession.Stderr = stream(&stderr, s.logStderr)
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		lines := bufio.NewScanner(logReader)
		lines.Buffer(make([]byte, 64*1024), 1024*1024)
		for lines.Scan() {
			p.GetLogger(ctx).InfoStatus(lines.Text())
		}
		_, _ = io.Copy(io.Discard, logReader)
	}()
	err = sshSession.Run(s.script)
	_ = logWriter.Close()
	<-logged
	if err != nil {
		return "", "", fmt.Errorf("%w; output:\n%s", err, combined.String())
	}
	return strings.TrimSuffix(stdout.String(), "\n"), strings.TrimSuffix(stderr.String(), "\n"), nil
}

// lockedWriter serialises the two streams' writes into a shared buffer or pipe.
type lockedWriter struct {
	writer io.Writer
	lock   *sync.Mutex
}

func (w lockedWriter) Write(data []byte) (int, error) {
	w.lock.Lock()
	defer w.lock.Unlock()
	return w.writer.Write(data)
}

func valueOr[T any](value *T, fallback T) T {
	if value == nil {
		return fallback
	}
	return *value
}
