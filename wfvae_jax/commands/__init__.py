"""The ``wfvae`` command and every subcommand's parser and ``main``; error reporting."""
