"""OpenClaw itself: its JSON5 config and the registration of clawtune's models in it."""
