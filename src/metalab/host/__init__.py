"""What runs on a lab host as root: the guard (session engine, cron and the runtimes' lifecycle) and the broker
(the root daemon that serves the unprivileged portal). Standard library only: the roles copy these sources to
the host, next to metalab/rules.py and metalab/brokerapi/."""
