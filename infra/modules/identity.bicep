// The user-assigned identity the app uses for storage, Key Vault, Application Insights and, with
// managed_identity_federation, as the client assertion of the Partner Center app registration.
param name string
param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
