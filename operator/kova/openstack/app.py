"""`kova api`: the OpenStack front door (Keystone v3 and Glance v2) over Kova's objects, one service per
package (identity/, image/; room for compute/), each with pure documents and rules and thin handlers."""

from __future__ import annotations

from aiohttp import web

from kova.adapters import env
from kova.adapters.kube import Kube
from kova.adapters.kubeapi import Apiserver, Cluster
from kova.adapters.runtime import Runtime, Settings
from kova.adapters.store import ObjectStore
from kova.openstack.front import TRUSTED_PROXIES
from kova.openstack.identity.handlers import IdentityHandlers
from kova.openstack.image.handlers import ImageHandlers, glance_errors


def application(identity: IdentityHandlers, images: ImageHandlers) -> web.Application:
    app = web.Application(middlewares=[glance_errors], client_max_size=1 << 20)
    r = app.router
    r.add_get("/identity", identity.identity_versions)
    r.add_get("/identity/", identity.identity_versions)
    r.add_get("/identity/v3", identity.identity_v3)
    r.add_get("/identity/v3/", identity.identity_v3)
    r.add_post("/identity/v3/auth/tokens", identity.issue_token)
    r.add_get("/identity/v3/auth/tokens", identity.validate_token, allow_head=True)
    r.add_get("/identity/v3/projects", identity.projects)
    r.add_get("/identity/v3/projects/{id}", identity.projects)
    r.add_get("/identity/v3/auth/projects", identity.auth_projects)
    r.add_get("/identity/v3/users/{user_id}/projects", identity.auth_projects)
    r.add_get("/identity/v3/auth/catalog", identity.auth_catalog)
    r.add_get("/identity/v3/domains", identity.domains)
    r.add_get("/identity/v3/domains/{id}", identity.domains)
    # Not ending in the project id: keystoneauth would take that for a Nova-style /v2.1/{project_id}
    # endpoint and put the id back after the version.
    p = "/projects/{project}/image"
    r.add_get(p, images.image_versions)
    r.add_get(p + "/", images.image_versions)
    r.add_get(p + "/versions", images.image_versions)
    r.add_get(p + "/v2/schemas/{name}", images.schema)
    r.add_get(p + "/v2/images", images.list_images)
    r.add_post(p + "/v2/images", images.create_image)
    r.add_route("*", p + "/v2/images/", images.not_found)
    r.add_get(p + "/v2/images/{id}", images.show_image)
    r.add_patch(p + "/v2/images/{id}", images.update_image)
    r.add_delete(p + "/v2/images/{id}", images.delete_image)
    r.add_put(p + "/v2/images/{id}/file", images.upload)
    r.add_get(p + "/v2/images/{id}/file", images.download)
    r.add_put(p + "/v2/images/{id}/tags/{tag}", images.put_tag)
    r.add_delete(p + "/v2/images/{id}/tags/{tag}", images.delete_tag)
    r.add_post(p + "/v2/images/{id}/actions/{action}", images.action)
    r.add_get(p + "/v2/images/{id}/members", images.members)
    r.add_post(p + "/v2/images/{id}/members", images.add_member)
    r.add_get(p + "/v2/images/{id}/members/{member}", images.show_member)
    r.add_put(p + "/v2/images/{id}/members/{member}", images.answer_member)
    r.add_delete(p + "/v2/images/{id}/members/{member}", images.delete_member)
    r.add_route("*", p + "/v2/info/{what}", images.not_found)  # no import methods, stores or usage to tell

    async def on_startup(_: web.Application) -> None:
        await images.start()

    async def on_cleanup(_: web.Application) -> None:
        await images.stop()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def make(public_url: str | None = None, kubeconfig: str | None = None) -> web.Application:
    """The application with its clients: the caller-token pool, and the API's own account and store. Without
    a public URL, the proxies in KOVA_API_TRUSTED_PROXIES may say the URL clients used (front.base_url)."""
    settings = Settings.from_env()
    trusted = env.networks(TRUSTED_PROXIES)  # read even with a public URL: a bad value is said at once
    kube = await Kube.connect(kubeconfig)
    rt = Runtime(settings=settings, kube=kube, store=ObjectStore(settings.store))
    apiserver = Apiserver(Cluster.of(kube.api_client.configuration))
    identity, images = IdentityHandlers(apiserver, rt, public_url), ImageHandlers(apiserver, rt, public_url)
    for front in (identity, images):
        front.trusted_proxies = trusted
    return application(identity, images)
