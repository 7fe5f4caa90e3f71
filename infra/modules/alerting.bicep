// What tells the operator that something needs them: an action group, alert rules over Application
// Insights, and a workbook. The queries live in infra/queries/*.kql; a test checks that every metric,
// attribute and log line they use is one the code emits.
param location string
param tags object
param insightsId string
param namePrefix string
param suffix string

@description('E-mail addresses that receive the alerts.')
param opsEmails array

@description('Resource ids of action groups you manage yourself (a Teams Workflows webhook, SMS, a pager); the rules notify them too.')
param extraActionGroupIds array

@description('Hours a batch may be polled before it counts as pending too long (the rule looks back 2 days).')
@minValue(1)
@maxValue(47)
param pendingThresholdHours int

@description('Percent of Partner Center answers that may be 429 before an alert fires.')
param throttlingThresholdPercent int

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-ops-${suffix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take('${namePrefix}ops', 12)
    enabled: true
    emailReceivers: [for (address, index) in opsEmails: {
      name: 'email-${index}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
  }
}

var rules = [
  {
    name: 'poisoned-messages'
    title: 'batchwatch: messages in a poison queue'
    description: 'batchwatch moved messages to a poison queue. Run python -m shared.audit poison list (and --queue failures) for the reasons.'
    severity: 2
    query: loadTextContent('../queries/poisoned-messages.kql')
  }
  {
    name: 'failed-invocations'
    title: 'batchwatch: failed invocations'
    description: 'Function invocations failed: a bug or a storage outage. The host retries; a last delivery the process did not survive lands in a poison queue.'
    severity: 2
    query: loadTextContent('../queries/failed-invocations.kql')
  }
  {
    name: 'bad-outcomes'
    title: 'batchwatch: batches ended access_denied or timed_out'
    description: 'Batches ended without a result. Check the credentials (access_denied) or the batch in Partner Center (timed_out), then resubmit.'
    severity: 1
    query: loadTextContent('../queries/bad-outcomes.kql')
  }
  {
    name: 'pending-too-long'
    title: 'batchwatch: batches pending too long'
    description: 'Batches have been polled for longer than ${pendingThresholdHours} hours without a final answer.'
    severity: 3
    query: replace(loadTextContent('../queries/pending-too-long.kql'), '{threshold}', string(pendingThresholdHours))
  }
  {
    name: 'throttling-rate'
    title: 'batchwatch: Partner Center throttling'
    description: 'More than ${throttlingThresholdPercent}% of Partner Center answers were 429 in the last hour.'
    severity: 3
    query: replace(loadTextContent('../queries/throttling-rate.kql'), '{threshold}', string(throttlingThresholdPercent))
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in rules: {
  name: '${namePrefix}-${rule.name}-${suffix}'
  location: location
  tags: tags
  properties: {
    displayName: rule.title
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      insightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: rule.name == 'throttling-rate' ? 'PT1H' : 'PT15M'
    // The query sees only the window unless the rule looks further back: a batch pending for hours needs days.
    overrideQueryTimeRange: rule.name == 'pending-too-long' ? 'P2D' : null
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: concat([
        actionGroup.id
      ], extraActionGroupIds)
    }
  }
}]

var panels = [
  {
    title: 'Outcomes per day'
    query: loadTextContent('../queries/outcomes-per-day.kql')
    visualization: 'barchart'
  }
  {
    title: 'Failed devices by error code'
    query: loadTextContent('../queries/failed-devices-by-code.kql')
    visualization: 'table'
  }
  {
    title: 'Failed devices by customer'
    query: loadTextContent('../queries/failed-devices-by-customer.kql')
    visualization: 'table'
  }
  {
    title: 'Lag from Partner Center completedTime to the final row'
    query: loadTextContent('../queries/poll-lag.kql')
    visualization: 'linechart'
  }
  {
    title: 'Partner Center answers by class (429s are throttling)'
    query: loadTextContent('../queries/answers-by-class.kql')
    visualization: 'timechart'
  }
]

var workbookItems = [for (panel, index) in panels: {
  type: 3
  name: 'panel-${index}'
  content: {
    version: 'KqlItem/1.0'
    title: panel.title
    query: panel.query
    size: 0
    queryType: 0
    resourceType: 'microsoft.insights/components'
    visualization: panel.visualization
    timeContext: {
      durationMs: 2592000000
    }
  }
}]

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, insightsId, 'batchwatch-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'batchwatch'
    category: 'workbook'
    sourceId: insightsId
    serializedData: string({
      version: 'Notebook/1.0'
      isLocked: false
      fallbackResourceIds: [
        insightsId
      ]
      items: workbookItems
    })
  }
}

output actionGroupId string = actionGroup.id
output workbookId string = workbook.id
