# What a Terraform user of `kova api` writes: a key pair and two servers, one without a network and one on
# the pod network, from an Image and a Flavor found by name. tests/cloud/tofu.py runs it offline: the
# provider comes from a local mirror under the made-up host kova.local, never from a registry.

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

variable "image" {
  type        = string
  description = "an Image's name"
}

variable "flavor" {
  type        = string
  description = "a Flavor's name"
}

variable "public_key" {
  type        = string
  description = "an OpenSSH public key"
}

# Kova's Keystone takes a Kubernetes token as the credential and a namespace as the project, with token
# auth (this) or password auth (password = token). An application credential works too:
#   application_credential_id     = var.project
#   application_credential_secret = var.token
provider "openstack" {
  auth_url            = var.auth_url
  token               = var.token
  tenant_name         = var.project
  user_domain_name    = "Default"
  project_domain_name = "Default"
  region              = "RegionOne"
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

resource "openstack_compute_instance_v2" "isolated" {
  name         = "tofu-isolated"
  image_id     = data.openstack_images_image_v2.image.id
  flavor_id    = data.openstack_compute_flavor_v2.flavor.id
  key_pair     = openstack_compute_keypair_v2.key.name
  network_mode = "none"
}

resource "openstack_compute_instance_v2" "pod" {
  name      = "tofu-pod"
  image_id  = data.openstack_images_image_v2.image.id
  flavor_id = data.openstack_compute_flavor_v2.flavor.id
  key_pair  = openstack_compute_keypair_v2.key.name

  # Kova's pod network. Given only a name, provider 3.4.0 looks the network up in the Network API (Neutron:
  # GET /v2.0/networks?name=pod&status=ACTIVE from a `network` entry of the catalog), not in Nova's
  # os-networks; given both uuid and name it asks nothing.
  network {
    name = "pod"
  }
}

output "keypair_id" {
  value = openstack_compute_keypair_v2.key.id
}

output "isolated_id" {
  value = openstack_compute_instance_v2.isolated.id
}

# The provider has no `status` attribute: power_state is the server's status in lower case ("active", "shutoff").
output "isolated_status" {
  value = openstack_compute_instance_v2.isolated.power_state
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
