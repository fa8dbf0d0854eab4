"""Calls back to Amazon: the Device Address API and progressive responses, via ask-sdk service clients.

`HttpxApiClient` replaces ask-sdk's `DefaultApiClient` so every call has a timeout (a hung call must not
eat the 8 s Alexa allows) and so tests can trust their own CA for a loopback stand-in of Amazon.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from ask_sdk_core.serialize import DefaultSerializer
from ask_sdk_model.services import ApiClient, ApiClientResponse, ApiConfiguration, ServiceClientFactory
from ask_sdk_model.services.api_client_request import ApiClientRequest
from ask_sdk_model.services.directive import Header, SendDirectiveRequest, SpeakDirective
from ask_sdk_model.services.service_exception import ServiceException

log = logging.getLogger("sosbridge.alexa")


class HttpxApiClient(ApiClient):
    def __init__(self, timeout_s: float, verify: str | bool = True) -> None:
        self.timeout_s = timeout_s
        self.verify = verify

    def invoke(self, request: ApiClientRequest) -> ApiClientResponse:
        if not str(request.url or "").lower().startswith("https://"):
            # Same rule as ask-sdk's DefaultApiClient: the access token never travels in clear.
            raise ServiceException("refusing a non-HTTPS Alexa API endpoint", 0, None, None)
        headers: dict[str, str] = {}
        for key, value in request.headers or []:
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        content = None
        if request.body is not None:
            content = json.dumps(request.body) if not isinstance(request.body, str | bytes) else request.body
        try:
            with httpx.Client(timeout=self.timeout_s, verify=self.verify) as client:
                resp = client.request(str(request.method), str(request.url), headers=headers, content=content)
        except httpx.HTTPError as exc:
            raise ServiceException(f"Alexa API call failed: {exc}", 0, None, None) from exc
        return ApiClientResponse(
            headers=list(resp.headers.items()), status_code=resp.status_code, body=resp.text
        )


AddressStatus = Literal["ok", "no_address", "forbidden", "error"]


@dataclass
class AddressResult:
    status: AddressStatus
    address: dict[str, Any] = field(default_factory=dict)


class AmazonApi:
    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client
        self.serializer = DefaultSerializer()

    def _factory(self, endpoint: str, token: str) -> ServiceClientFactory:
        return ServiceClientFactory(
            ApiConfiguration(
                serializer=self.serializer,
                api_client=self.api_client,
                authorization_value=token,
                api_endpoint=endpoint,
            )
        )

    def full_address(self, endpoint: str, token: str, device_id: str) -> AddressResult:
        client = self._factory(endpoint, token).get_device_address_service()
        try:
            address = client.get_full_address(device_id)
        except ServiceException as exc:
            if exc.status_code == 403:
                return AddressResult("forbidden")
            log.warning("device address lookup failed", extra={"status": exc.status_code})
            return AddressResult("error")
        if address is None:
            return AddressResult("no_address")
        data = self.serializer.serialize(address)
        return AddressResult("ok", data) if isinstance(data, dict) and data else AddressResult("no_address")

    def progressive(self, endpoint: str, token: str, request_id: str, speech: str) -> bool:
        client = self._factory(endpoint, token).get_directive_service()
        try:
            client.enqueue(
                SendDirectiveRequest(header=Header(request_id=request_id), directive=SpeakDirective(speech=speech))
            )
        except ServiceException as exc:
            log.warning("progressive response failed", extra={"status": exc.status_code})
            return False
        return True
