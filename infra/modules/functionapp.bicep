// The Flex Consumption function app (Linux, Python 3.11), running as the user-assigned identity.
param name string
param planName string
param location string
param tags object
param identityId string
param identityClientId string
param blobEndpoint string
param queueEndpoint string
param tableEndpoint string
param deploymentContainerName string
param appInsightsConnectionString string
param keyVaultUri string
param partnerCenterAuth string
param partnerCenterTenantId string
param partnerCenterClientId string
param alertWebhookFormat string
param digestSchedule string
param statusQueueName string
param failureQueueName string
param tableNames object
param maximumInstanceCount int
param instanceMemoryMB int

// Identity-based AzureWebJobsStorage: the host and the app's own queue and table clients use it.
var storageSettings = [
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: blobEndpoint
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: queueEndpoint
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: tableEndpoint
  }
]

var appSettings = [
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
  {
    name: 'STATUS_QUEUE_NAME'
    value: statusQueueName
  }
  {
    name: 'FAILURE_QUEUE_NAME'
    value: failureQueueName
  }
  {
    name: 'BATCH_TABLE_NAME'
    value: tableNames.batch
  }
  {
    name: 'DEVICE_TABLE_NAME'
    value: tableNames.device
  }
  {
    name: 'DEVICE_HISTORY_TABLE_NAME'
    value: tableNames.history
  }
  {
    name: 'ALERT_TABLE_NAME'
    value: tableNames.alert
  }
  {
    name: 'PARTNER_CENTER_AUTH'
    value: partnerCenterAuth
  }
  {
    name: 'PARTNER_CENTER_TENANT_ID'
    value: partnerCenterTenantId
  }
  {
    name: 'PARTNER_CENTER_CLIENT_ID'
    value: partnerCenterClientId
  }
  {
    name: 'ALERT_WEBHOOK_URL'
    value: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/alert-webhook-url/)'
  }
  {
    name: 'ALERT_WEBHOOK_FORMAT'
    value: alertWebhookFormat
  }
  {
    name: 'DIGEST_SCHEDULE'
    value: digestSchedule
  }
]

// What each Partner Center auth mode needs on top.
var federationSettings = [
  {
    name: 'PARTNER_CENTER_MANAGED_IDENTITY_CLIENT_ID'
    value: identityClientId
  }
]
var clientSecretSettings = [
  {
    name: 'PARTNER_CENTER_CLIENT_SECRET'
    value: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/partner-center-client-secret/)'
  }
]

var certificateSettings = [
  {
    name: 'PARTNER_CENTER_CERTIFICATE'
    value: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/partner-center-certificate/)'
  }
]
var secretModeSettings = partnerCenterAuth == 'certificate' ? certificateSettings : federationSettings
var modeSettings = partnerCenterAuth == 'client_secret' ? clientSecretSettings : secretModeSettings
var allSettings = concat(storageSettings, appSettings, modeSettings)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption offers zone redundancy only in some regions; queued work survives an instance loss anyway (messages reappear after their lease).
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: deployment (func azure functionapp publish) goes through the app's public SCM endpoint; the app has no HTTP triggers, so nothing else listens. Disable it if you deploy from inside a VNet.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; queue messages wait for an instance, so always-ready instances would only add cost.
  // checkov:skip=CKV_AZURE_213: there is no HTTP endpoint to probe; health shows in Application Insights (failures, poison queues).
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: true
    clientCertMode: 'Required'
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: allSettings
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

output name string = app.name
