bind = "127.0.0.1:18462"
workers = 1
pidfile = "/tmp/hup-exp/p.pid"
