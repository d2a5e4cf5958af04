# What a Terraform user of `kova api` writes: a key pair and two servers, one without a network and one on
# the pod network, from an Image and a Flavor found by name. tests/cloud/tofu.py runs it offline: the
# provider comes from a local mirror under the made-up host kova.local, never from a registry.
# tests/integration/test_terraform.py applies it, resizes the servers by changing `flavor`, and destroys it.

terraform {
  required_providers {
    openstack = {
      source  = "kova.local/terraform-provider-openstack/openstack"
      version = "3.4.0" # the Makefile's OPENSTACK_PROVIDER_VERSION
    }
  }
}

variable "auth_url" {
  type        = string
  description = "Kova's Keystone, e.g. http://127.0.0.1:PORT/identity/v3"
}

variable "token" {
  type        = string
  sensitive   = true
  description = "a Kubernetes token that may use the project's namespace"
}

variable "project" {
  type        = string
  description = "the namespace"
}

variable "auth" {
  type        = string
  default     = "token"
  description = "how the provider gives Keystone the token: `token` or `application_credential`"

  validation {
    condition     = contains(["token", "application_credential"], var.auth)
    error_message = "auth is `token` or `application_credential`."
  }
}

variable "image" {
  type        = string
  description = "an Image's name"
}

variable "flavor" {
  type        = string
  description = "a Flavor's name: change it and the servers are resized"
}

variable "public_key" {
  type        = string
  description = "an OpenSSH public key"
}

variable "pod_network_id" {
  type        = string
  description = "the pod network's id: the `pod` entry of GET <compute>/os-networks"
}

locals {
  application_credential = var.auth == "application_credential"
}

# Kova's Keystone takes a Kubernetes token as the credential and a namespace as the project, either as a
# token with the project's name and domain (Default, the only one), or as an application credential whose
# id is the namespace and whose secret is the token (an application credential implies its project: no
# tenant_name then). Password auth (password = the token) works too.
provider "openstack" {
  auth_url = var.auth_url
  region   = "RegionOne"

  token               = local.application_credential ? null : var.token
  tenant_name         = local.application_credential ? null : var.project
  user_domain_name    = local.application_credential ? null : "Default"
  project_domain_name = local.application_credential ? null : "Default"

  application_credential_id     = local.application_credential ? var.project : null
  application_credential_secret = local.application_credential ? var.token : null
}

data "openstack_compute_flavor_v2" "flavor" {
  name = var.flavor
}

data "openstack_images_image_v2" "image" {
  name        = var.image
  most_recent = true
}

resource "openstack_compute_keypair_v2" "key" {
  name       = "tofu-key"
  public_key = var.public_key
}

# By name (a Flavor's id is its name in Kova): a new name resizes the server in place; the provider waits
# for VERIFY_RESIZE and confirms the resize itself.
resource "openstack_compute_instance_v2" "isolated" {
  name         = "tofu-isolated"
  image_id     = data.openstack_images_image_v2.image.id
  flavor_name  = data.openstack_compute_flavor_v2.flavor.name
  key_pair     = openstack_compute_keypair_v2.key.name
  network_mode = "none"
}

resource "openstack_compute_instance_v2" "pod" {
  name        = "tofu-pod"
  image_id    = data.openstack_images_image_v2.image.id
  flavor_name = data.openstack_compute_flavor_v2.flavor.name
  key_pair    = openstack_compute_keypair_v2.key.name

  # Kova's pod network, by uuid and name. Given only one of them, provider 3.4.0 looks the other up in the
  # Network API (Neutron: GET /v2.0/networks?name=pod&status=ACTIVE from a `network` entry of the catalog),
  # not in Nova's os-networks, and Kova has no Neutron; given both it asks nothing. The name is also how
  # the provider matches the server's addresses (keyed by network name) to this block.
  network {
    uuid = var.pod_network_id
    name = "pod"
  }
}

output "flavor_id" {
  value = data.openstack_compute_flavor_v2.flavor.id
}

output "flavor_vcpus" {
  value = data.openstack_compute_flavor_v2.flavor.vcpus
}

output "image_id" {
  value = data.openstack_images_image_v2.image.id
}

output "keypair_fingerprint" {
  value = openstack_compute_keypair_v2.key.fingerprint
}

output "isolated_id" {
  value = openstack_compute_instance_v2.isolated.id
}

# The provider has no `status` attribute: power_state is the server's status in lower case ("active", "shutoff").
output "isolated_status" {
  value = openstack_compute_instance_v2.isolated.power_state
}

output "isolated_ip" {
  value = openstack_compute_instance_v2.isolated.access_ip_v4
}

output "isolated_flavor" {
  value = openstack_compute_instance_v2.isolated.flavor_name
}

output "pod_id" {
  value = openstack_compute_instance_v2.pod.id
}

output "pod_status" {
  value = openstack_compute_instance_v2.pod.power_state
}

output "pod_ip" {
  value = openstack_compute_instance_v2.pod.access_ip_v4
}

output "pod_flavor" {
  value = openstack_compute_instance_v2.pod.flavor_name
}

output "pod_network" {
  value = openstack_compute_instance_v2.pod.network
}
