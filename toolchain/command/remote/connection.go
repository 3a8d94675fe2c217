package remote

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/retry"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

const (
	defaultDialErrorLimit = 10
	defaultPerDialTimeout = 15
	unlimitedDialErrors   = -1
)

// Connection is how to reach the host, directly or through a bastion (`proxy`).
type Connection struct {
	connectionFields
	Proxy *ProxyConnection `pulumi:"proxy,optional"`
}

// ProxyConnection is the bastion a Connection goes through.
type ProxyConnection struct{ connectionFields }

type connectionFields struct {
	User               *string  `pulumi:"user,optional"`
	Password           *string  `pulumi:"password,optional" provider:"secret"`
	Host               *string  `pulumi:"host"`
	Port               *float64 `pulumi:"port,optional"`
	PrivateKey         *string  `pulumi:"privateKey,optional" provider:"secret"`
	PrivateKeyPassword *string  `pulumi:"privateKeyPassword,optional" provider:"secret"`
	AgentSocketPath    *string  `pulumi:"agentSocketPath,optional"`
	DialErrorLimit     *int     `pulumi:"dialErrorLimit,optional"`
	PerDialTimeout     *int     `pulumi:"perDialTimeout,optional"`
	HostKey            *string  `pulumi:"hostKey,optional"`
}

func (c *Connection) Annotate(a infer.Annotator) {
	a.Describe(&c, "How to reach a remote host over SSH.")
	c.connectionFields.annotate(a, "the host")
	a.Describe(&c.Proxy, "The bastion host to connect through.")
}

func (c *ProxyConnection) Annotate(a infer.Annotator) {
	a.Describe(&c, "How to reach the bastion host a connection goes through.")
	c.connectionFields.annotate(a, "the bastion host")
}

func (c *connectionFields) annotate(a infer.Annotator, what string) {
	a.Describe(&c.User, "The user to log in as. Default: root.")
	a.SetDefault(&c.User, "root")
	a.Describe(&c.Password, "A password, offered after the key.")
	a.Describe(&c.Host, "The address of "+what+".")
	a.Describe(&c.Port, "The SSH port. Default: 22.")
	a.SetDefault(&c.Port, 22)
	a.Describe(&c.PrivateKey, "An SSH private key, in OpenSSH or PEM format.")
	a.Describe(&c.PrivateKeyPassword, "The passphrase of an encrypted private key.")
	a.Describe(&c.AgentSocketPath, "An SSH agent's socket. Default: SSH_AUTH_SOCK when set.")
	a.Describe(&c.DialErrorLimit, "Failed dials allowed before giving up; -1: no limit. Default: 10.")
	a.SetDefault(&c.DialErrorLimit, defaultDialErrorLimit)
	a.Describe(&c.PerDialTimeout, "Seconds each dial may take; 0: no limit. Default: 15.")
	a.SetDefault(&c.PerDialTimeout, defaultPerDialTimeout)
	a.Describe(&c.HostKey, "The host's public key (authorized_keys format): the only key accepted, "+
		"and the only algorithm offered. Unset: any host key is accepted.")
}

// clientConfig is the SSH client's settings. Check has set the defaults, so user and timeout are given.
func (c *connectionFields) clientConfig() (*ssh.ClientConfig, error) {
	config := &ssh.ClientConfig{
		User:            *c.User,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), //nolint:gosec // only when no hostKey is given
		Timeout:         time.Second * time.Duration(*c.PerDialTimeout),
	}
	if c.HostKey != nil {
		hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(*c.HostKey))
		if err != nil {
			return nil, fmt.Errorf("failed to parse host key: %w", err)
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
			return nil, err
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
	socket := c.AgentSocketPath
	if socket == nil {
		if fromEnvironment := os.Getenv("SSH_AUTH_SOCK"); fromEnvironment != "" {
			socket = &fromEnvironment
		}
	}
	if socket != nil {
		conn, err := net.Dial("unix", *socket)
		if err != nil {
			return nil, err
		}
		config.Auth = append(config.Auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
	}
	return config, nil
}

func (c *connectionFields) endpoint() string {
	return net.JoinHostPort(*c.Host, fmt.Sprintf("%d", int(*c.Port)))
}

func (c *connectionFields) dialErrorLimit() int {
	if c.DialErrorLimit == nil {
		return defaultDialErrorLimit
	}
	return *c.DialErrorLimit
}

// dial opens the SSH connection, through the bastion when there is one.
func (c *Connection) dial(ctx context.Context) (*ssh.Client, error) {
	config, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	endpoint, tries := c.endpoint(), c.dialErrorLimit()
	if c.Proxy == nil {
		return withRetries(ctx, "Dial", tries, func() (*ssh.Client, error) {
			return ssh.Dial("tcp", endpoint, config)
		})
	}
	proxyConfig, err := c.Proxy.clientConfig()
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	bastion, err := withRetries(ctx, "Dial proxy", c.Proxy.dialErrorLimit(), func() (*ssh.Client, error) {
		return ssh.Dial("tcp", c.Proxy.endpoint(), proxyConfig)
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	tunnel, err := withRetries(ctx, "Dial from proxy", tries, func() (net.Conn, error) {
		return bastion.Dial("tcp", endpoint)
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	var channels <-chan ssh.NewChannel
	var requests <-chan *ssh.Request
	conn, err := withRetries(ctx, "Dial", tries, func() (ssh.Conn, error) {
		conn, newChannels, newRequests, err := ssh.NewClientConn(tunnel, endpoint, config)
		channels, requests = newChannels, newRequests
		return conn, err
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return ssh.NewClient(conn, channels, requests), nil
}

// withRetries calls attempt until it succeeds, with Pulumi's own backoff, or until `limit` attempts
// after the first have failed (-1: no limit). The error counts the retries, as upstream's does.
func withRetries[T any](ctx context.Context, what string, limit int, attempt func() (T, error)) (T, error) {
	var lastErr error
	done, result, err := retry.Until(ctx, retry.Acceptor{
		Accept: func(try int, _ time.Duration) (bool, any, error) {
			value, err := attempt()
			if err == nil {
				return true, value, nil
			}
			lastErr = err
			dials := try + 1
			if limit > unlimitedDialErrors && dials > limit {
				return true, nil, fmt.Errorf("after %d failed attempts: %w", try, lastErr)
			}
			shown := "inf"
			if limit != unlimitedDialErrors {
				shown = fmt.Sprintf("%d", limit)
			}
			p.GetLogger(ctx).InfoStatusf("%s %d/%s failed: retrying", what, dials, shown)
			return false, nil, nil
		},
	})
	if done && err == nil {
		return result.(T), nil
	}
	var zero T
	if err == nil {
		err = ctx.Err()
	}
	return zero, err
}
