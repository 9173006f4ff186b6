"""The Kubernetes API layer: credentials and transport, pure JSON → values, the informer.

Nothing here imports the kubernetes client's generated API or model modules: requests
go by path, and responses are parsed from raw JSON. In a pod nothing of the
``kubernetes`` package is imported at all; it is used only to read kubeconfigs.
"""
