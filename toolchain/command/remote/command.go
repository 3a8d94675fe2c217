// Package remote is the command provider's `command:remote:Command`: a script run over SSH when
// the resource is created, updated or deleted. Its types are pulumi-command's, field for field
// (names, optionality, secrets, defaults), because infer derives every Check and Diff answer from
// them: the same types give the same answers, upstream's quirks included.
package remote

import (
	"context"

	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Command runs `create` once, `update` (or `create` again) when its inputs change and `delete`
// when it is removed. A change of `triggers` replaces it. It has no Check of its own: infer's
// default applies the defaults and secrets of the types below.
type Command struct{}

func (c *Command) Annotate(a infer.Annotator) {
	a.Describe(&c, "A script run on a remote host over SSH as the resource is created, updated or deleted.")
}

type CommandInputs struct {
	Triggers               *[]any            `pulumi:"triggers,optional" provider:"replaceOnChanges"`
	Create                 *string           `pulumi:"create,optional"`
	Update                 *string           `pulumi:"update,optional"`
	Delete                 *string           `pulumi:"delete,optional"`
	Stdin                  *string           `pulumi:"stdin,optional"`
	Logging                *Logging          `pulumi:"logging,optional"`
	Connection             *Connection       `pulumi:"connection" provider:"secret"`
	Environment            map[string]string `pulumi:"environment,optional"`
	AddPreviousOutputInEnv *bool             `pulumi:"addPreviousOutputInEnv,optional"`
}

func (c *CommandInputs) Annotate(a infer.Annotator) {
	a.Describe(&c.Triggers, "Values whose change replaces the resource: `delete`, then `create`.")
	a.Describe(&c.Create, "The script run once when the resource is created.")
	a.Describe(&c.Update, "The script run when any input but `triggers` changes; `create` when unset.")
	a.Describe(&c.Delete, "The script run when the resource is deleted.")
	a.Describe(&c.Stdin, "Fed to the script's standard input (when not empty).")
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
	_ infer.CustomResource[CommandInputs, CommandOutputs] = (*Command)(nil)
	_ infer.CustomUpdate[CommandInputs, CommandOutputs]   = (*Command)(nil)
	_ infer.CustomDelete[CommandOutputs]                  = (*Command)(nil)
)

func (*Command) Create(ctx context.Context, req infer.CreateRequest[CommandInputs]) (infer.CreateResponse[CommandOutputs], error) {
	state := CommandOutputs{CommandInputs: req.Inputs}
	id, err := resource.NewUniqueHex(req.Name, 8, 0)
	if err != nil {
		return infer.CreateResponse[CommandOutputs]{Output: state}, err
	}
	if req.DryRun || req.Inputs.Create == nil {
		return infer.CreateResponse[CommandOutputs]{ID: id, Output: state}, nil
	}
	err = state.run(ctx, *req.Inputs.Create)
	return infer.CreateResponse[CommandOutputs]{ID: id, Output: state}, err
}

func (*Command) Update(ctx context.Context, req infer.UpdateRequest[CommandInputs, CommandOutputs]) (infer.UpdateResponse[CommandOutputs], error) {
	state := CommandOutputs{CommandInputs: req.Inputs, Stdout: req.State.Stdout, Stderr: req.State.Stderr}
	if req.DryRun {
		return infer.UpdateResponse[CommandOutputs]{Output: state}, nil
	}
	var err error
	switch {
	case req.Inputs.Update != nil:
		err = state.run(ctx, *req.Inputs.Update)
	case req.Inputs.Create != nil:
		err = state.run(ctx, *req.Inputs.Create)
	}
	return infer.UpdateResponse[CommandOutputs]{Output: state}, err
}

func (*Command) Delete(ctx context.Context, req infer.DeleteRequest[CommandOutputs]) (infer.DeleteResponse, error) {
	if req.State.Delete == nil {
		return infer.DeleteResponse{}, nil
	}
	state := req.State
	return infer.DeleteResponse{}, state.run(ctx, *state.Delete)
}
