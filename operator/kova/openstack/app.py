"""`kova api`: the OpenStack front door (Keystone v3, Glance v2 and Nova 2.1) over Kova's objects, one service
per package (identity/, image/, compute/), each with pure documents and rules and thin handlers."""

from __future__ import annotations

from aiohttp import web

from kova.adapters import env
from kova.adapters.kube import Kube
from kova.adapters.kubeapi import Apiserver, Cluster
from kova.adapters.runtime import Runtime, Settings
from kova.adapters.store import Stores
from kova.openstack.compute.console_proxy import ConsoleProxy, add_routes
from kova.openstack.compute.handlers import ComputeHandlers, nova_middleware
from kova.openstack.front import TRUSTED_PROXIES
from kova.openstack.identity.handlers import IdentityHandlers
from kova.openstack.image.handlers import ImageHandlers, glance_errors
from kova.openstack.image.metadef_handlers import MetadefHandlers

METADEFS_CATALOG = "KOVA_METADEFS_CATALOG"  # load (default): Glance's catalog and OS::Kova::KubeVirt at start; skip


def application(identity: IdentityHandlers, images: ImageHandlers, compute: ComputeHandlers,
                metadefs: MetadefHandlers, load_catalog: bool = True) -> web.Application:
    app = web.Application(middlewares=[glance_errors, nova_middleware], client_max_size=1 << 20)
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
    r.add_put(p + "/v2/images/{id}/stage", images.stage)
    r.add_get(p + "/v2/images/{id}/stage", images.stage_status)  # Kova's: how much of a stage arrived
    r.add_post(p + "/v2/images/{id}/import", images.import_image)
    r.add_get(p + "/v2/info/{what}", images.info)  # import methods, stores, usage
    r.add_get(p + "/v2/info/stores/detail", images.stores_detail)
    r.add_delete(p + "/v2/stores/{store}/{id}", images.delete_from_store)
    metadef_routes(r, p + "/v2", metadefs)
    r.add_get("/stores/{store}/images/{uid}", images.store_link)  # a file store's signed links (importers)

    compute_routes(r, compute)
    if compute.console is not None:
        add_routes(r, compute.console)

    async def on_startup(_: web.Application) -> None:
        await images.start()
        await compute.start()
        await metadefs.start()
        if load_catalog:
            await metadefs.load_catalog()

    async def on_cleanup(_: web.Application) -> None:
        await metadefs.stop()
        await compute.stop()
        await images.stop()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def metadef_routes(r: web.UrlDispatcher, v2: str, m: MetadefHandlers) -> None:
    """Glance's /v2/metadefs and the schemas of its documents."""
    r.add_get(v2 + "/schemas/metadefs/{name}", m.schema)
    n = v2 + "/metadefs/namespaces"
    r.add_get(n, m.list_namespaces)
    r.add_post(n, m.create_namespace)
    ns = n + "/{namespace}"
    r.add_get(ns, m.show_namespace)
    r.add_put(ns, m.update_namespace)
    r.add_delete(ns, m.delete_namespace)
    for method in ("GET", "POST", "DELETE"):
        r.add_route(method, ns + "/objects", m.objects)
        r.add_route(method, ns + "/properties", m.properties)
        r.add_route(method, ns + "/tags", m.tags)
    for method in ("GET", "PUT", "DELETE"):
        r.add_route(method, ns + "/objects/{name}", m.object)
        r.add_route(method, ns + "/properties/{name}", m.property)
    for method in ("GET", "POST", "PUT", "DELETE"):
        r.add_route(method, ns + "/tags/{name}", m.tag)
    r.add_get(v2 + "/metadefs/resource_types", m.resource_types)
    r.add_get(ns + "/resource_types", m.associations)
    r.add_post(ns + "/resource_types", m.associations)
    r.add_delete(ns + "/resource_types/{name}", m.association)


def compute_routes(r: web.UrlDispatcher, c: ComputeHandlers) -> None:
    p = "/projects/{project}/compute"
    for path in (p, p + "/"):
        r.add_get(path, c.versions)
    for path in (p + "/v2", p + "/v2/", p + "/v2.1", p + "/v2.1/"):
        r.add_get(path, c.version)
    v = p + "/v2.1"
    r.add_get(v + "/extensions", c.extensions)
    r.add_get(v + "/servers", c.list_servers)
    r.add_get(v + "/servers/detail", c.list_servers)
    r.add_post(v + "/servers", c.create_server)
    s = v + "/servers/{id}"
    r.add_get(s, c.show_server)
    r.add_put(s, c.update_server)
    r.add_delete(s, c.delete_server)
    r.add_post(s + "/action", c.action)
    r.add_post(s + "/remote-consoles", c.remote_console)
    for method in ("GET", "PUT", "POST"):
        r.add_route(method, s + "/metadata", c.metadata)
    for method in ("GET", "PUT", "DELETE"):
        r.add_route(method, s + "/metadata/{key}", c.metadata)
        r.add_route(method, s + "/tags", c.tags)
        r.add_route(method, s + "/tags/{tag}", c.tags)
    r.add_get(s + "/ips", c.ips)
    r.add_get(s + "/ips/{network}", c.ips)
    r.add_get(s + "/os-security-groups", c.server_security_groups)
    r.add_get(s + "/os-instance-actions", c.instance_actions)
    for method in ("GET", "POST"):
        r.add_route(method, s + "/os-volume_attachments", c.volume_attachments)
    for method in ("GET", "DELETE"):
        r.add_route(method, s + "/os-volume_attachments/{volume_id}", c.volume_attachments)
    r.add_get(s + "/os-instance-actions/{request_id}", c.instance_actions)
    r.add_get(v + "/flavors", c.list_flavors)
    r.add_get(v + "/flavors/detail", c.list_flavors)
    r.add_post(v + "/flavors", c.admin_only)
    r.add_get(v + "/flavors/{id}", c.show_flavor)
    r.add_delete(v + "/flavors/{id}", c.admin_only)
    r.add_get(v + "/flavors/{id}/os-extra_specs", c.flavor_extra_specs)
    r.add_get(v + "/flavors/{id}/os-extra_specs/{key}", c.flavor_extra_specs)
    r.add_post(v + "/flavors/{id}/os-extra_specs", c.admin_only)
    r.add_get(v + "/flavors/{id}/os-flavor-access", c.flavor_access)
    r.add_post(v + "/flavors/{id}/action", c.admin_only)
    r.add_get(v + "/os-keypairs", c.list_keypairs)
    r.add_post(v + "/os-keypairs", c.create_keypair)
    r.add_get(v + "/os-keypairs/{name}", c.show_keypair)
    r.add_delete(v + "/os-keypairs/{name}", c.delete_keypair)
    r.add_get(v + "/os-server-groups", c.list_server_groups)
    r.add_post(v + "/os-server-groups", c.create_server_group)
    r.add_get(v + "/os-server-groups/{id}", c.show_server_group)
    r.add_delete(v + "/os-server-groups/{id}", c.delete_server_group)
    r.add_get(v + "/os-availability-zone", c.availability_zones)
    r.add_get(v + "/os-availability-zone/detail", c.availability_zones)
    r.add_get(v + "/limits", c.limits)
    r.add_get(v + "/os-quota-sets/{target}", c.quota_sets)
    r.add_get(v + "/os-quota-sets/{target}/{what:detail|defaults}", c.quota_sets)
    r.add_get(v + "/os-simple-tenant-usage", c.tenant_usage)
    r.add_get(v + "/os-simple-tenant-usage/{target}", c.tenant_usage)
    for kind in ("os-networks", "os-tenant-networks"):
        r.add_get(f"{v}/{kind}", c.networks)
        r.add_get(f"{v}/{kind}/{{id}}", c.networks)
    r.add_get(v + "/os-security-groups", c.security_groups)
    r.add_get(v + "/os-security-groups/{id}", c.security_groups)


async def make(public_url: str | None = None, kubeconfig: str | None = None) -> web.Application:
    """The application with its clients: the caller-token pool, and the API's own account and store. Without
    a public URL, the proxies in KOVA_API_TRUSTED_PROXIES may say the URL clients used (front.base_url)."""
    settings = Settings.from_env()
    trusted = env.networks(TRUSTED_PROXIES)  # read even with a public URL: a bad value is said at once
    kube = await Kube.connect(kubeconfig)
    rt = Runtime(settings=settings, kube=kube, store=Stores(settings.stores, settings.link_key))
    apiserver = Apiserver(Cluster.of(kube.api_client.configuration))
    identity, images = IdentityHandlers(apiserver, rt, public_url), ImageHandlers(apiserver, rt, public_url)
    compute = ComputeHandlers(apiserver, rt, images, public_url)
    compute.console = ConsoleProxy.from_env(apiserver)
    metadefs = MetadefHandlers(apiserver, rt, public_url)
    for front in (identity, images, compute, metadefs):
        front.trusted_proxies = trusted
    load = env.get(METADEFS_CATALOG, _load_or_skip, True, "load or skip")
    return application(identity, images, compute, metadefs, load)


def _load_or_skip(text: str) -> bool:
    if text not in ("load", "skip"):
        raise ValueError(text)
    return text == "load"
