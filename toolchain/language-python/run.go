package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// The exec script exits with this code after it has reported the program's failure to the engine
// itself (an unhandled exception, with its traceback); the engine must then add no error of its own.
const exitAfterUserMessage = 32

// Run runs the program through the exec script:
//
//	python -u pulumi-language-python-exec --monitor ... --engine ... PROGRAM ARGS...
//
// with the stack's configuration in PULUMI_CONFIG (a JSON object) and the names of its secret keys
// in PULUMI_CONFIG_SECRET_KEYS (a JSON list), which is where the Python SDK reads them. A program
// that fails is a RunResponse error, not an RPC error, so the engine reports it as the program's.
func (h *languageHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	engine, err := h.engineAddress()
	if err != nil {
		return nil, err
	}
	if req.GetAttachDebugger() {
		return &pulumirpc.RunResponse{Error: "this Python language host cannot attach a debugger"}, nil
	}
	opts, tc, err := resolve(req.GetInfo(), false)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	if err := typecheck(ctx, opts, tc); err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}

	// Empty rather than null: the SDK iterates over both without checking.
	values, secretKeys := req.GetConfig(), req.GetConfigSecretKeys()
	if values == nil {
		values = map[string]string{}
	}
	if secretKeys == nil {
		secretKeys = []string{}
	}
	config, err := json.Marshal(values)
	if err != nil {
		return nil, fmt.Errorf("encoding the stack configuration: %w", err)
	}
	secrets, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, fmt.Errorf("encoding the secret configuration keys: %w", err)
	}

	// The program is stopped if the engine gives up on this call or calls Cancel.
	cmd, release, err := h.command(ctx, tc, append([]string{"-u", h.execPath}, h.execArguments(req, engine)...)...)
	if err != nil {
		return nil, err
	}
	defer release()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "PULUMI_CONFIG="+string(config), "PULUMI_CONFIG_SECRET_KEYS="+string(secrets))
	// The CLI shows the host's own output as the program's, so the program writes straight to it.
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	logging.V(5).Infof("running %v", cmd.Args)

	err = cmd.Run()
	if err == nil {
		return &pulumirpc.RunResponse{}, nil
	}
	code, ran := exitCode(err)
	switch {
	case !ran:
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not run the Python program: %v", err)}, nil
	case code == exitAfterUserMessage:
		return &pulumirpc.RunResponse{Bail: true}, nil
	case code < 0:
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("the Python program was stopped: %v", err)}, nil
	default:
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited with non-zero exit code: %d", code)}, nil
	}
}

// execArguments are the flags pulumi-language-python-exec defines, then the program and its arguments.
// --parallel and --dry_run are always given: the script converts them without checking for absence.
func (h *languageHost) execArguments(req *pulumirpc.RunRequest, engine string) []string {
	var args []string
	add := func(name, value string) {
		if value != "" {
			args = append(args, "--"+name, value)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", engine)
	add("project", req.GetProject())
	add("root_directory", req.GetInfo().GetRootDirectory())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", strconv.FormatBool(req.GetDryRun()))
	add("parallel", strconv.Itoa(int(req.GetParallel())))
	add("tracing", h.tracing)
	add("organization", req.GetOrganization())

	// The entry point is relative to the program directory, while the script resolves it after
	// changing to --pwd; an absolute path means the same file either way.
	program := req.GetInfo().GetEntryPoint()
	if program == "" {
		program = "."
	}
	if !filepath.IsAbs(program) {
		program = filepath.Join(req.GetInfo().GetProgramDirectory(), program)
	}
	return append(append(args, program), req.GetArgs()...)
}

// typecheck runs the configured type checker over the program directory before the program runs;
// mypy is told to skip the virtualenv when it lives inside that directory.
func typecheck(ctx context.Context, opts toolchain.PythonOptions, tc toolchain.Toolchain) error {
	var module string
	switch opts.Typechecker {
	case toolchain.TypeCheckerNone:
		return nil
	case toolchain.TypeCheckerMypy:
		module = "mypy"
	case toolchain.TypeCheckerPyright:
		module = "pyright"
	}
	args := []string{opts.ProgramDir}
	if venv, err := tc.VirtualEnvPath(ctx); module == "mypy" && err == nil && venv != "" {
		if rel, err := filepath.Rel(opts.ProgramDir, venv); err == nil && filepath.IsLocal(rel) {
			args = append(args, "--exclude", rel)
		}
	}
	cmd, err := tc.ModuleCommand(ctx, module, args...)
	if err != nil {
		return err
	}
	cmd.Dir = opts.ProgramDir
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if _, ran := exitCode(err); ran {
			return errors.New("the " + module + " type check failed (its report is above)")
		}
		return fmt.Errorf("could not run the %s type checker: %w", module, err)
	}
	return nil
}
