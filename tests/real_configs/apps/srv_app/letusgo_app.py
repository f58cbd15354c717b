# Found through `chdir` (LeeHanYeong/let-us-Go changes into /srv/app, where
# its project lives): importable only from that directory.
import os

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return f"Hello from let-us-Go, running in {os.path.basename(os.getcwd())}\n"
