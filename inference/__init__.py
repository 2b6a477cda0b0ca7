import os

# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512 VNNI/BF16 or AMX. Without
# them (this project's AMD EPYC machines: AVX2 only) training runs mostly on one core: measured with
# bench/train_speed.py, the whole-network recipe went from 28 to 72 images/s with oneDNN on. Set before
# TensorFlow is first imported (lazily, in inference code); an explicit environment setting wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
