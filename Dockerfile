# qlayer container: build from Debian 12 packages, run slim as non-root.
#   docker build -t qlayer .                      # CPU image
#   docker build -t qlayer:cuda --build-arg BUILDER=nvidia/cuda:13.0.0-devel-ubuntu24.04 \
#                --build-arg RUNTIME=nvidia/cuda:13.0.0-runtime-ubuntu24.04 --build-arg QLAYER_CUDA=on .
#   docker run -p 50051:50051 -p 9400:9400 -v /models/llama:/model:ro qlayer
ARG BUILDER=debian:12
ARG RUNTIME=debian:12-slim

FROM ${BUILDER} AS build
ARG QLAYER_CUDA=off
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake ninja-build g++ pkg-config libabsl-dev libgrpc++-dev libprotobuf-dev protobuf-compiler \
      protobuf-compiler-grpc libdnnl-dev prometheus-cpp-dev nlohmann-json3-dev \
      libgtest-dev libgmock-dev libbenchmark-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DQLAYER_CUDA=${QLAYER_CUDA} \
      -DQLAYER_BUILD_TESTS=OFF -DQLAYER_BUILD_BENCHMARKS=OFF \
 && cmake --build /build --target qlayer-server qlayer-cli qlayer-quantize

FROM ${RUNTIME} AS runtime
# Debian 12's names for the shared libraries the programs link; checked without
# Docker by tests/deploy/dockerfile_stages_check.sh. The CUDA variant's Ubuntu
# 24.04 base was never built here and may name some of them differently (its
# 64-bit time_t transition added "t64" suffixes): pass its list in this ARG.
ARG RUNTIME_PACKAGES="libgrpc++1.51 libprotobuf32 libabsl20220623 libdnnl2 libgomp1 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libcivetweb1 ca-certificates"
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ${RUNTIME_PACKAGES} \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home qlayer
COPY --from=build /build/server/qlayer-server /build/server/qlayer-quantize /build/client/qlayer-cli /usr/local/bin/
USER 10001
EXPOSE 50051 9400
# The model is mounted read-only at /model.
VOLUME ["/model"]
# grpc.health.v1 needs no bearer token; with --tls-cert, override this check
# with the CA: qlayer-cli --tls-ca /tls/ca.pem --server 127.0.0.1:50051 health
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD ["qlayer-cli", "--server", "127.0.0.1:50051", "--timeout", "2", "health"]
ENTRYPOINT ["qlayer-server", "--model", "/model", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9400"]
