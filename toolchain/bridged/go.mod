module clawhosters.example/toolchain/bridged

go 1.26

require github.com/pulumi/pulumi-terraform-bridge/v3 v3.137.0
