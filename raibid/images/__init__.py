"""raibid's own images: the build context, immutable tags, the rootless BuildKit Job, registry lookups.

Plain values in, plain values out: a ``Kube``, a registry URL and credentials, a
templates folder. Nothing here imports the CLI, the Application or the terminal.
"""
