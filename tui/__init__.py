"""The operator's terminal dashboard (Textual). It talks to meshd only through the control
API client, so it runs wherever the socket is reachable."""
