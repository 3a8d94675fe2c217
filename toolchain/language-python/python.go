package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// How long a program or plugin has to exit after being asked to stop, before it is killed: less
// than the 5 s the CLI gives the host itself.
const stopGrace = 3 * time.Second

// pythonOptions reads the `runtime.options` of Pulumi.yaml (or PulumiPolicy.yaml, PulumiPlugin.yaml):
// `toolchain` (pip, poetry, uv), `virtualenv` (relative to the project root) and `typechecker`
// (mypy, pyright). Plugins other than policy packs default to a `venv` virtualenv, as upstream's
// host does, since they never run on the ambient Python.
func pythonOptions(info *pulumirpc.ProgramInfo, isPlugin bool) (toolchain.PythonOptions, error) {
	opts := toolchain.PythonOptions{Root: info.GetRootDirectory(), ProgramDir: info.GetProgramDirectory()}
	raw := info.GetOptions().AsMap()

	text := func(key string) (string, error) {
		value, ok := raw[key]
		if !ok {
			return "", nil
		}
		s, ok := value.(string)
		if !ok {
			return "", fmt.Errorf("the %q runtime option must be a string, not %v", key, value)
		}
		return s, nil
	}

	var err error
	if opts.Virtualenv, err = text("virtualenv"); err != nil {
		return opts, err
	}

	name, err := text("toolchain")
	if err != nil {
		return opts, err
	}
	switch name {
	case "":
		opts.Toolchain = toolchain.Auto
	case "pip":
		opts.Toolchain = toolchain.Pip
	case "poetry":
		opts.Toolchain = toolchain.Poetry
	case "uv":
		opts.Toolchain = toolchain.Uv
	default:
		return opts, fmt.Errorf("unsupported toolchain runtime option %q (pip, poetry or uv)", name)
	}

	checker, err := text("typechecker")
	if err != nil {
		return opts, err
	}
	switch checker {
	case "":
		opts.Typechecker = toolchain.TypeCheckerNone
	case "mypy":
		opts.Typechecker = toolchain.TypeCheckerMypy
	case "pyright":
		opts.Typechecker = toolchain.TypeCheckerPyright
	default:
		return opts, fmt.Errorf("unsupported typechecker runtime option %q (mypy or pyright)", checker)
	}

	if isPlugin && opts.Virtualenv == "" && (opts.Toolchain == toolchain.Auto || opts.Toolchain == toolchain.Pip) {
		opts.Virtualenv = "venv"
	}
	return opts, nil
}

// resolve is pythonOptions followed by the toolchain those options select.
func resolve(info *pulumirpc.ProgramInfo, isPlugin bool) (toolchain.PythonOptions, toolchain.Toolchain, error) {
	opts, err := pythonOptions(info, isPlugin)
	if err != nil {
		return opts, nil, err
	}
	tc, err := toolchain.ResolveToolchain(opts)
	return opts, tc, err
}

// command is tc.Command for a program or plugin that runs until it exits, ctx ends or the host
// stops what is running (Cancel, or its own shutdown); release frees what watches for that.
//
// The process gets a process group of its own: the CLI stops the host with SIGINT to the host's
// whole group, and Python answers SIGINT with a KeyboardInterrupt traceback from wherever it is
// waiting. The host stops it with SIGTERM instead, which ends Python quietly, and kills it if it
// is still there after stopGrace.
func (h *languageHost) command(
	ctx context.Context, tc toolchain.Toolchain, args ...string,
) (cmd *exec.Cmd, release func(), err error) {
	procCtx, stop := context.WithCancel(ctx)
	unhook := context.AfterFunc(h.runningContext(), stop)
	release = func() {
		unhook()
		stop()
	}
	if cmd, err = tc.Command(procCtx, args...); err != nil {
		release()
		return nil, nil, err
	}
	cmdutil.RegisterProcessGroup(cmd)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	return cmd, release, nil
}

// exitCode is the exit status (-1 for a signal) of a process that ran and failed, or false if err
// is not such a failure.
func exitCode(err error) (int, bool) {
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return 0, false
	}
	return exitErr.ExitCode(), true
}
