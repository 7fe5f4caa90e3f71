// batchwatch on Azure: storage, a Flex Consumption function app, a user-assigned identity used for
// everything, Application Insights on Log Analytics, and a Key Vault for the secrets.
targetScope = 'resourceGroup'

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('Prefix of every resource name: 3-10 lowercase letters or digits.')
@minLength(3)
@maxLength(10)
param namePrefix string = 'batchwatch'

@description('How batchwatch gets Partner Center tokens. managed_identity_federation needs no secret; client_secret and certificate read theirs from Key Vault.')
@allowed([
  'managed_identity_federation'
  'client_secret'
  'certificate'
])
param partnerCenterAuth string = 'managed_identity_federation'

@description('Tenant id of the Partner Center app registration.')
param partnerCenterTenantId string

@description('Client (application) id of the Partner Center app registration.')
param partnerCenterClientId string

@description('Format of the alerts posted to the webhook held in Key Vault as alert-webhook-url.')
@allowed([
  'teams'
  'slack'
  'generic'
])
param alertWebhookFormat string = 'teams'

@description('When the daily digest is sent: an NCRONTAB expression in UTC (seconds first). Default 07:00 every day.')
param digestSchedule string = '0 0 7 * * *'

@description('Most instances the app may scale out to. Partner Center throttles per partner, so keep it modest.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 10

@description('Memory of each instance in MB.')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('E-mail addresses that receive batchwatch\'s operational alerts (poison, failed invocations, bad outcomes, pending too long, throttling).')
param opsEmails array = []

@description('Resource ids of action groups you manage yourself (a webhook, SMS, a pager): the alert rules notify them too. The template takes no secrets, so a webhook receiver belongs in such a group.')
param extraActionGroupIds array = []

@description('Hours a batch may be polled before the pending-too-long alert fires.')
@minValue(1)
@maxValue(47)
param pendingThresholdHours int = 24

@description('Percent of Partner Center answers that may be 429 in an hour before the throttling alert fires.')
@minValue(1)
@maxValue(100)
param throttlingThresholdPercent int = 10

param tags object = {
  application: 'batchwatch'
}

var suffix = uniqueString(resourceGroup().id)
var names = {
  storage: take('${namePrefix}${suffix}', 24)
  identity: '${namePrefix}-id-${suffix}'
  plan: '${namePrefix}-plan-${suffix}'
  app: '${namePrefix}-${suffix}'
  workspace: '${namePrefix}-log-${suffix}'
  insights: '${namePrefix}-appi-${suffix}'
  vault: take('${namePrefix}kv${suffix}', 24)
}

// One place for the names the app uses: the storage module creates them and the app settings name them.
var statusQueueName = 'batch-status-requests'
var failureQueueName = 'device-failures'
var tableNames = {
  batch: 'BatchUploadStatus'
  device: 'DeviceUploadStatus'
  history: 'DeviceUploadHistory'
  alert: 'AlertLog'
  operatorLog: 'OperatorLog' // written by the audit CLI (poison replay, resubmit), not by the app
}
var deploymentContainerName = 'app-package'

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: names.storage
    location: location
    tags: tags
    queueNames: [
      statusQueueName
      '${statusQueueName}-poison'
      failureQueueName
      '${failureQueueName}-poison'
    ]
    tableNames: [
      tableNames.batch
      tableNames.device
      tableNames.history
      tableNames.alert
      tableNames.operatorLog
    ]
    deploymentContainerName: deploymentContainerName
    principalId: identity.outputs.principalId
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: names.workspace
    insightsName: names.insights
    location: location
    tags: tags
    principalId: identity.outputs.principalId
  }
}

module alerting 'modules/alerting.bicep' = {
  name: 'alerting'
  params: {
    location: location
    tags: tags
    insightsId: monitoring.outputs.id
    namePrefix: namePrefix
    suffix: suffix
    opsEmails: opsEmails
    extraActionGroupIds: extraActionGroupIds
    pendingThresholdHours: pendingThresholdHours
    throttlingThresholdPercent: throttlingThresholdPercent
  }
}

module vault 'modules/keyvault.bicep' = {
  name: 'vault'
  params: {
    name: names.vault
    location: location
    tags: tags
    principalId: identity.outputs.principalId
  }
}

module app 'modules/functionapp.bicep' = {
  name: 'app'
  params: {
    name: names.app
    planName: names.plan
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: vault.outputs.uri
    partnerCenterAuth: partnerCenterAuth
    partnerCenterTenantId: partnerCenterTenantId
    partnerCenterClientId: partnerCenterClientId
    alertWebhookFormat: alertWebhookFormat
    digestSchedule: digestSchedule
    statusQueueName: statusQueueName
    failureQueueName: failureQueueName
    tableNames: tableNames
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

output functionAppName string = app.outputs.name
output queueEndpoint string = storage.outputs.queueEndpoint
output statusQueueName string = statusQueueName
output tableEndpoint string = storage.outputs.tableEndpoint
output storageAccountName string = storage.outputs.name
output keyVaultName string = vault.outputs.name
output managedIdentityPrincipalId string = identity.outputs.principalId
output managedIdentityClientId string = identity.outputs.clientId
