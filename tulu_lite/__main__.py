"""`python -m tulu_lite ...` (used by `accelerate launch -m tulu_lite train ...`)."""

from tulu_lite.cli import main

main()
