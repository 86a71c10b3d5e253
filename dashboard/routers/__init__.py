"""The dashboard's routes by concern: storyboards, shots, files, actions."""
