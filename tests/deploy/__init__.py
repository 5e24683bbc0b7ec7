"""The deployment files: Dockerfile, compose.yaml and the Kubernetes manifests."""
