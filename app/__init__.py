"""The local Gradio page."""
