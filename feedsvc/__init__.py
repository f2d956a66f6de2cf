"""feedsvc: a news-feed microservice, preforked by gunicorn across every core."""
