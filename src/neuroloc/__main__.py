"""`python -m neuroloc ...`: the CLI, so that launchers that run modules work
(`torchrun --nproc_per_node N -m neuroloc localize ...`, `accelerate launch -m neuroloc ...`)."""

from .cli import main

if __name__ == "__main__":
    main()
