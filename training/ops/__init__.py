"""Operations around training runs: launching on Kubernetes, promoting models."""
