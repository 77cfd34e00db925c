"""Every form of the portal, one module per area: htpasswd users, audit log, retention rules, access rules,
repositories, storage, unused images."""
