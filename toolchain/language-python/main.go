// Command pulumi-language-python is the Pulumi language host for Python programs and policy packs,
// built only on the public Go packages of github.com/pulumi/pulumi/sdk/v3.
//
// The CLI starts it with the engine's address as the last argument and reads the gRPC port it
// prints on stdout. Programs run through the SDK's pulumi-language-python-exec script, which must
// sit beside this binary (the build copies it there from the SDK module).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// version is set at build time with -ldflags "-X main.version=...". Empty means unknown to the CLI,
// which is better than a string it cannot parse as semver.
var version string

const (
	execScript = "pulumi-language-python-exec"
	// How often the engine's health is checked; the host stops once the engine is gone.
	healthInterval = 5 * time.Minute
)

func main() {
	tracing := flag.String("tracing", "", "emit tracing to a Zipkin-compatible endpoint")
	showVersion := flag.Bool("version", false, "print the plugin version and exit")
	flag.Parse()

	if *showVersion {
		fmt.Println(version)
		return
	}

	logging.InitLogging(false, 0, false)
	if endpoint := os.Getenv("PULUMI_OTEL_EXPORTER_OTLP_ENDPOINT"); endpoint != "" {
		if err := cmdutil.InitOtelTracing("pulumi-language-python", endpoint); err != nil {
			logging.V(3).Infof("could not start OpenTelemetry tracing: %v", err)
		}
		defer cmdutil.CloseOtelTracing()
	} else {
		cmdutil.InitTracing("pulumi-language-python", "pulumi-language-python", *tracing)
	}

	self, err := os.Executable()
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not locate this executable: %w", err))
	}
	execPath := filepath.Join(filepath.Dir(self), execScript)
	if _, err := os.Stat(execPath); err != nil {
		cmdutil.Exit(fmt.Errorf("the %s script must be installed beside %s: %w", execScript, self, err))
	}

	// The CLI stops plugins with SIGINT (to the whole process group) and waits for them to exit.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	host := newLanguageHost(execPath, *tracing)
	if engine := flag.Arg(0); engine != "" {
		// Stop when the engine stops answering, so an abandoned host does not linger.
		if err := rpcutil.Healthcheck(ctx, engine, healthInterval, stop); err != nil {
			cmdutil.Exit(fmt.Errorf("could not watch the engine at %s: %w", engine, err))
		}
		host.setEngine(engine)
	}

	// Stopping ends the programs and plugins still running, so that their calls return and the
	// server's graceful stop can finish.
	stopServing := make(chan bool)
	go func() {
		<-ctx.Done()
		host.stopRunning()
		close(stopServing)
	}()
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: stopServing,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
		Options: rpcutil.TracingServerInterceptorOptions(nil),
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not start the language host's gRPC server: %w", err))
	}
	fmt.Printf("%d\n", handle.Port)

	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("the language host's gRPC server stopped: %w", err))
	}
}

// languageHost implements the LanguageRuntime service. RPCs it does not override (code generation,
// Pack, Link, Template, RuntimeOptionsPrompts) answer Unimplemented, which the CLI tolerates
// everywhere except in the commands that need them.
type languageHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	execPath string
	tracing  string

	mu     sync.Mutex
	engine string
	// Ends when the programs and plugins running now must stop; replaced by a fresh one then, since
	// a host the CLI attached to (PULUMI_DEBUG_LANGUAGES) outlives one CLI's Cancel.
	running     context.Context
	stopCurrent context.CancelFunc
}

func newLanguageHost(execPath, tracing string) *languageHost {
	h := &languageHost{execPath: execPath, tracing: tracing}
	h.running, h.stopCurrent = context.WithCancel(context.Background())
	return h
}

func (h *languageHost) setEngine(address string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.engine = address
}

func (h *languageHost) engineAddress() (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.engine == "" {
		return "", errors.New("no engine address: the CLI must pass it as an argument or call Handshake first")
	}
	return h.engine, nil
}

// Handshake is how a CLI that attaches to an already running host (PULUMI_DEBUG_LANGUAGES) tells
// it the engine's address.
func (h *languageHost) Handshake(
	_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.setEngine(req.GetEngineAddress())
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *languageHost) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// Cancel stops every running program and plugin; the CLI calls it before shutting the host down.
func (h *languageHost) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	h.stopRunning()
	return &emptypb.Empty{}, nil
}

func (h *languageHost) stopRunning() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopCurrent()
	h.running, h.stopCurrent = context.WithCancel(context.Background())
}

// runningContext ends when the programs and plugins started now must stop.
func (h *languageHost) runningContext() context.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.running
}
