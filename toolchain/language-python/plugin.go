package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	sdk "github.com/pulumi/pulumi/sdk/v3"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// RunPlugin runs a plugin written in Python and streams its output back; the CLI reads the gRPC
// port from that output. A policy pack (kind analyzer) runs as `python -u -m pulumi.policy ARGS
// PACK_DIR` in the pack's directory; any other plugin runs as `python -u PLUGIN_DIR ARGS` (its
// __main__.py) in the requested working directory.
//
// pulumi_policy learns the stack it checks only from PULUMI_PROJECT, PULUMI_STACK, PULUMI_CONFIG
// and the like, at start-up, while the CLI sends that over gRPC (ConfigureStack) after it has the
// pack's port. So a policy pack is fronted by the SDK's PolicyProxy: the CLI talks to the proxy,
// the pack starts once the proxy has the stack's configuration, and the proxy forwards to it.
func (h *languageHost) RunPlugin(
	req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer,
) error {
	if req.GetAttachDebugger() {
		return errors.New("this Python language host cannot attach a debugger")
	}
	ctx := server.Context()
	policyPack := req.GetKind() == string(apitype.AnalyzerPlugin)
	_, tc, err := resolve(req.GetInfo(), !policyPack)
	if err != nil {
		return err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return err
	}

	dir := req.GetInfo().GetProgramDirectory()
	args := append([]string{"-u", dir}, req.GetArgs()...)
	if policyPack {
		args = append(append([]string{"-u", "-m", "pulumi.policy"}, req.GetArgs()...), dir)
	}
	// The CLI stops the plugin by ending this call.
	cmd, release, err := h.command(ctx, tc, args...)
	if err != nil {
		return err
	}
	defer release()
	cmd.Dir = req.GetPwd()
	if policyPack {
		cmd.Dir = dir
	}
	// The environment the CLI chose for the plugin (not the host's own), with the virtualenv activated.
	cmd.Env = req.GetEnv()
	if len(cmd.Env) == 0 {
		cmd.Env = os.Environ()
	}
	if venv, err := tc.VirtualEnvPath(ctx); err == nil && venv != "" {
		cmd.Env = toolchain.ActivateVirtualEnv(cmd.Env, venv)
	}

	closer, stdout, stderr, err := rpcutil.MakeRunPluginStreams(server, false)
	if err != nil {
		return err
	}
	defer closer.Close()

	var proxy *sdk.PolicyProxy
	if policyPack {
		var packStdout io.Writer
		if proxy, packStdout, err = sdk.NewPolicyProxy(ctx, stdout); err != nil {
			return fmt.Errorf("could not start the policy pack proxy: %w", err)
		}
		stack, err := proxy.AwaitConfiguration(ctx)
		if err != nil {
			return fmt.Errorf("waiting for the stack configuration: %w", err)
		}
		stackEnv, err := policyEnvironment(stack)
		if err != nil {
			return err
		}
		cmd.Env = append(cmd.Env, stackEnv...)
		stdout = packStdout
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	logging.V(5).Infof("running plugin %v in %s", cmd.Args, cmd.Dir)

	if err := cmd.Start(); err != nil {
		if proxy != nil {
			proxy.Abort(err)
		}
		return fmt.Errorf("could not start the Python plugin: %w", err)
	}
	if proxy != nil {
		err = proxy.Attach(ctx, cmd)
	} else {
		err = cmd.Wait()
	}
	if err != nil {
		code, ran := exitCode(err)
		if !ran {
			return fmt.Errorf("the Python plugin failed: %w", err)
		}
		return server.Send(&pulumirpc.RunPluginResponse{
			Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(code)},
		})
	}
	return closer.Close()
}

// policyEnvironment is the stack a policy pack checks, in the variables pulumi_policy reads at
// start-up. Without a configuration (`pulumi policy publish`) there is no stack to describe.
func policyEnvironment(stack *pulumirpc.AnalyzerStackConfigureRequest) ([]string, error) {
	if stack == nil {
		return nil, nil
	}
	env := []string{
		"PULUMI_PROJECT=" + stack.GetProject(),
		"PULUMI_STACK=" + stack.GetStack(),
		"PULUMI_DRY_RUN=" + strconv.FormatBool(stack.GetDryRun()),
	}
	if org := stack.GetOrganization(); org != "" {
		env = append(env, "PULUMI_ORGANIZATION="+org)
	}
	if config := stack.GetConfig(); len(config) > 0 {
		encoded, err := json.Marshal(config)
		if err != nil {
			return nil, fmt.Errorf("encoding the stack configuration: %w", err)
		}
		env = append(env, "PULUMI_CONFIG="+string(encoded))
	}
	if keys := stack.GetConfigSecretKeys(); len(keys) > 0 {
		encoded, err := json.Marshal(keys)
		if err != nil {
			return nil, fmt.Errorf("encoding the secret configuration keys: %w", err)
		}
		env = append(env, "PULUMI_CONFIG_SECRET_KEYS="+string(encoded))
	}
	return env, nil
}
