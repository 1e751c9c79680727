# Container engine and images: podman & co. from Debian's packages (containers/tools.sh), the
# stand-in for the Dockerfile's base image (containers/base/build.sh) and the project image.
# Included by the Makefile (`-include mk/*.mk`); `make test` depends on container-tools, and
# tests/containers builds both images (cached) before it runs the pods as containers.

.PHONY: container-tools base-image image

container-tools:
	@containers/tools.sh

# The stand-in for rayproject/ray:2.60.0-py311 (rebuilt only when its inputs change).
base-image: container-tools
	containers/base/build.sh

# The project image, CPU variant, as `docker build -t ray-training:0.1.0 .` on the stand-in.
image: base-image
	containers/build_image.sh
