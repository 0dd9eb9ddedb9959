"""The outage settings a manager installs, and that a user's own values win over them."""

from __future__ import annotations

import uuid
from typing import ClassVar

from celery import Celery

from resilience_tasks import ResilienceManager
from resilience_tasks.adapter.install import OUTAGE, REDIS_BROKER_OPTIONS
from tests.conftest import REDIS_URL


def new_app(broker: str = REDIS_URL) -> Celery:
    unique = uuid.uuid4().hex[:8]
    app = Celery(f"settings-{unique}", broker=broker, backend=REDIS_URL)
    app.conf.update(task_default_queue=f"celery-{unique}")
    return app


def manage(app: Celery) -> ResilienceManager:
    return ResilienceManager(f"team-{uuid.uuid4().hex[:8]}", app=app, redis_url=REDIS_URL)


def test_outage_settings_are_installed_and_reach_the_backend() -> None:
    app = new_app()
    manage(app)
    for key, value in OUTAGE.items():
        assert app.conf[key] == value, key
    options = app.conf.broker_transport_options
    for key, value in REDIS_BROKER_OPTIONS.items():
        assert options[key] == value, key
    assert "retry_on_timeout" not in options  # a replayed publish could be a duplicate
    backend = app.backend  # Celery's Redis backend reads them when it is built
    assert backend.always_retry is True
    assert backend.max_retries == OUTAGE["result_backend_max_retries"]
    assert backend.connparams["socket_keepalive"] is True
    assert backend.connparams["retry_on_timeout"] is True
    assert backend.connparams["socket_connect_timeout"] == 5.0
    assert backend.connparams["health_check_interval"] == 10


def test_the_users_own_values_win_set_before_the_manager() -> None:
    app = new_app()
    app.conf.update(
        result_backend_always_retry=False,
        result_backend_max_retries=3,
        broker_connection_max_retries=7,
        redis_socket_keepalive=False,
        broker_transport_options={"socket_timeout": 3.0, "visibility_timeout": 60},
    )
    manage(app)
    assert app.conf.result_backend_always_retry is False
    assert app.conf.result_backend_max_retries == 3
    assert app.conf.broker_connection_max_retries == 7
    assert app.conf.redis_socket_keepalive is False
    options = app.conf.broker_transport_options
    assert options["socket_timeout"] == 3.0
    assert options["visibility_timeout"] == 60
    assert options["socket_connect_timeout"] == REDIS_BROKER_OPTIONS["socket_connect_timeout"]
    assert app.conf.redis_retry_on_timeout is True  # what the user left alone is installed


def test_the_users_own_values_win_from_a_config_object_loaded_after_the_manager() -> None:
    class Config:
        result_backend_max_retries = 4
        broker_connection_retry_on_startup = False
        broker_transport_options: ClassVar[dict[str, int]] = {"health_check_interval": 0}

    app = new_app()
    manage(app)
    assert app.conf.result_backend_always_retry is True  # the configuration is loaded
    app.config_from_object(Config)
    assert app.conf.result_backend_max_retries == 4
    assert app.conf.broker_connection_retry_on_startup is False
    assert app.conf.broker_transport_options["health_check_interval"] == 0
    assert app.conf.result_backend_always_retry is True
    # the configuration was loaded again: what the manager installs is installed again
    assert app.conf.task_acks_late is True
    assert app.conf.accept_content == ["json"]
    assert app.conf.broker_transport_options["visibility_timeout"] == 900.0


def test_old_style_setting_names_count_as_the_users_own() -> None:
    class Config:
        BROKER_CONNECTION_MAX_RETRIES = 9
        CELERY_RESULT_BACKEND = REDIS_URL

    app = Celery(f"settings-{uuid.uuid4().hex[:8]}", broker=REDIS_URL)
    app.config_from_object(Config)
    manage(app)
    assert app.conf.broker_connection_max_retries == 9


def test_redis_socket_options_are_not_given_to_another_broker() -> None:
    app = new_app(broker="amqp://guest:guest@127.0.0.1:5672//")
    manage(app)
    options = app.conf.broker_transport_options
    assert not set(REDIS_BROKER_OPTIONS) & set(options)
    assert app.conf.result_backend_always_retry is True
