# sweep on a CUDA GPU box: docker build -t sweep . && docker run --gpus all -v $PWD/runs:/work/runs sweep run configs/dcpt.toml
FROM nvidia/cuda:12.6.3-devel-ubuntu24.04 AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH
# Compute capability of the target GPU (90 = H100/H200, 80 = A100, 89 = L4/4090).
ARG CUDA_COMPUTE_CAP=90
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
WORKDIR /src
COPY . .
RUN cargo build --release --features cuda && cp target/release/sweep /usr/local/bin/sweep

FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends libcublas-12-6 libcurand-12-6 cuda-nvrtc-12-6 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/sweep /usr/local/bin/sweep
COPY configs /work/configs
WORKDIR /work
ENTRYPOINT ["sweep"]
