# Source: PostHog/posthog, gunicorn.config.py (an old version). Written from
# a description, not copied. The source's worker class is gevent; the
# harness runs it with -k sync (the command line overrides the file) so that
# its on_starting hook, which reads server.address, is tested apart from
# gevent. The harness binds with -b (over the unix socket).
loglevel = "error"
bind = "unix://tmp/nginx.socket"
worker_class = "gevent"
timeout = 90


def on_starting(server):
    print(
        """
PostHog
Server running on {}:{}
""".format(*server.address[0])
    )


def when_ready(server):
    # The Heroku nginx buildpack starts once this file exists (the source
    # writes /tmp/app-initialized; relative here to keep runs apart).
    open("app-initialized", "w").close()
