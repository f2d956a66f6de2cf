"""`python -m feedsvc` is the `feedsvc` command."""

from feedsvc.compose.cli import main

main()
