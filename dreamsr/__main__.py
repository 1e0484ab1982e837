"""``python -m dreamsr ...`` (and ``torchrun -m dreamsr train ...``) runs the CLI."""

from dreamsr.cli import main

if __name__ == "__main__":
    main()
