"""maskgit_jax: MaskGIT (Chang et al., CVPR 2022) in JAX/Flax, with training."""
import setuptools

INSTALL_REQUIRES = [
    "jax>=0.9,<0.11",
    "flax>=0.12,<0.13",
    "optax>=0.2.7,<0.3",
    "orbax-checkpoint>=0.11,<0.13",
    "ml-collections>=1.0,<2",
    "tensorflow-datasets>=4.9.8,<5",
    "clu>=0.0.12,<0.1",
    "grain>=0.2.12,<0.3",
    "numpy>=1.26,<3",
    # JAX's numpy dtypes. 0.7.0 takes 0.95 s to import (its extension's
    # start-up, nearly all in numpy's PyUFunc_AddLoop comparing loop
    # signatures), 0.6.0 5 ms: a second of every process start, each CLI
    # and each test subprocess included.
    "ml-dtypes>=0.5,<0.7",
    "pillow>=10,<14",
    "scipy>=1.11,<2",
    "absl-py>=2,<3",
    "tqdm>=4.60,<5",
    "tensorboardX>=2.6,<3",
]

setuptools.setup(
    name="maskgit_jax",
    version="0.1.0",
    description="MaskGIT in JAX/Flax: VQGAN tokenizer, masked transformer, "
    "parallel decoding, training and evaluation.",
    packages=setuptools.find_packages(include=["maskgit_jax", "maskgit_jax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4",
                 "nbclient>=0.10,<0.12", "nbformat>=5.10,<6",
                 "ipykernel>=6.29,<8"],
        # Preparing TFDS data sets (e.g. ImageNet) needs TensorFlow; reading
        # them does not.
        "prepare": ["tensorflow"],
    },
    license="Apache-2.0",
)
