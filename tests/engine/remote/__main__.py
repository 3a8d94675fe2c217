"""One remote command over SSH, shaped entirely by the stack's config, tls keys of each algorithm, and
with `server` a Hetzner server made beside the command (the provider's create and the SSH session in
flight at once)."""

import json

import pulumi
import pulumi_command as command
import pulumi_hcloud as hcloud
import pulumi_tls as tls

config = pulumi.Config()

if config.get_bool("keys"):
    keys = {
        "ed25519": tls.PrivateKey("ed25519", algorithm="ED25519"),
        "rsa": tls.PrivateKey("rsa", algorithm="RSA", rsa_bits=config.get_int("rsa_bits") or 2048),
        "ecdsa": tls.PrivateKey("ecdsa", algorithm="ECDSA", ecdsa_curve="P256"),
    }
    for name, key in keys.items():
        pulumi.export(
            name,
            pulumi.Output.all(
                key.id,
                key.private_key_openssh,
                key.private_key_pem,
                key.private_key_pem_pkcs8,
                key.public_key_openssh,
                key.public_key_pem,
                key.public_key_fingerprint_sha256,
            ),
        )

if config.get("host"):
    connection = command.remote.ConnectionArgs(
        host=config.require("host"),
        port=config.require_int("port"),
        user="root",
        private_key=config.require_secret("private_key"),
        host_key=config.require("host_key"),
        dial_error_limit=config.get_int("dial_error_limit"),
        per_dial_timeout=2,
    )
    script = command.remote.Command(
        "script",
        connection=connection,
        create=config.require("create"),
        update=config.get("update"),
        delete=config.get("delete"),
        stdin=config.get_secret("stdin"),
        environment=json.loads(config.get("environment") or "{}"),
        triggers=[config.get("trigger") or "1"],
    )
    pulumi.export("stdout", script.stdout)
    pulumi.export("stderr", script.stderr)

if config.get_bool("server"):
    server = hcloud.Server(
        "server", server_type="cx23", location="fsn1", image="debian-12", labels={"managed-by": "engine-remote"}
    )
    pulumi.export("server_id", server.id)
