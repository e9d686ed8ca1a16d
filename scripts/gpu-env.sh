# Sourced by scripts/gpu-check.sh and scripts/gpu-profile.sh on a GPU machine: unpacks the
# binaries that scripts/build-cuda.sh packed into .gpu/ to $W (/tmp/sweep-gpu), and points
# LD_LIBRARY_PATH at CUDA 13's libraries (the toolkit's, else the nvidia wheels beside PyTorch).
W=/tmp/sweep-gpu
mkdir -p $W
for f in .gpu/*.xz; do
  b=$W/$(basename "$f" .xz)
  xz -dc "$f" > "$b" && chmod +x "$b" || exit 90
done
LIBS=""
for d in /usr/local/nvidia/lib64 /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
  $(python3 -c 'import glob, site; print(" ".join(p for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/*/lib")))' 2>/dev/null); do
  [ -d "$d" ] && LIBS="$LIBS:$d"
done
export LD_LIBRARY_PATH="${LIBS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
