"""cnipam-docker: a Docker (libnetwork) remote IPAM driver on cnipam's store.

Kept apart from the CNI plugin's modules: nothing on the plugin's path imports this
package, so the plugin's start-up cost does not grow with the driver.
"""
