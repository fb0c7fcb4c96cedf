import React, { ChangeEvent } from 'react';
import { DataSourcePluginOptionsEditorProps } from '@grafana/data';
import { Alert, InlineField, Input, RadioButtonGroup, SecretInput } from '@grafana/ui';

import { Access, LiveOptions, LiveSecureOptions, Transport, withDefaults } from '../types';

type Props = DataSourcePluginOptionsEditorProps<LiveOptions, LiveSecureOptions>;

const ACCESS_OPTIONS: Array<{ label: string; value: Access; description: string }> = [
  { label: 'Direct', value: 'direct', description: 'The browser connects to the URL (WebSocket or HTTP stream)' },
  { label: 'Proxy', value: 'proxy', description: 'Through the Grafana server, which adds the token (HTTP stream)' },
];

const TRANSPORT_OPTIONS: Array<{ label: string; value: Transport }> = [
  { label: 'WebSocket', value: 'ws' },
  { label: 'HTTP stream', value: 'http' },
];

const LABEL_WIDTH = 20;

export function ConfigEditor({ options, onOptionsChange }: Props) {
  const jsonData = withDefaults(options.jsonData);
  const secureJsonFields = options.secureJsonFields ?? {};
  const secureJsonData = (options.secureJsonData ?? {}) as LiveSecureOptions;

  // The data source stays in Grafana's "proxy" mode so that its proxy route (plugin.json) is
  // available; jsonData.access picks which path the plugin uses.
  const setJson = <K extends keyof LiveOptions>(key: K, value: LiveOptions[K]) =>
    onOptionsChange({ ...options, access: 'proxy', jsonData: { ...options.jsonData, [key]: value } });

  const onNumber = (key: 'throttleMs' | 'maxPoints') => (e: ChangeEvent<HTMLInputElement>) => {
    const n = Number(e.currentTarget.value);
    setJson(key, Number.isFinite(n) && n >= 0 ? n : jsonData[key]);
  };

  const onTokenChange = (e: ChangeEvent<HTMLInputElement>) =>
    onOptionsChange({ ...options, secureJsonData: { ...secureJsonData, token: e.currentTarget.value } });

  const onTokenReset = () =>
    onOptionsChange({
      ...options,
      secureJsonFields: { ...secureJsonFields, token: false },
      secureJsonData: { ...secureJsonData, token: '' },
    });

  return (
    <>
      <InlineField label="URL" labelWidth={LABEL_WIDTH} tooltip="Base URL of livedata serve, e.g. http://localhost:8080">
        <Input
          width={40}
          value={options.jsonData.url ?? ''}
          placeholder="http://localhost:8080"
          onChange={(e: ChangeEvent<HTMLInputElement>) => setJson('url', e.currentTarget.value)}
        />
      </InlineField>
      <InlineField label="Access" labelWidth={LABEL_WIDTH}>
        <RadioButtonGroup<Access> options={ACCESS_OPTIONS} value={jsonData.access} onChange={(v) => setJson('access', v)} />
      </InlineField>
      <InlineField
        label="Transport"
        labelWidth={LABEL_WIDTH}
        disabled={jsonData.access === 'proxy'}
        tooltip="With proxy access the stream always uses HTTP: Grafana's proxy does not carry WebSockets"
      >
        <RadioButtonGroup<Transport>
          options={TRANSPORT_OPTIONS}
          value={jsonData.access === 'proxy' ? 'http' : jsonData.transport}
          onChange={(v) => setJson('transport', v)}
          disabled={jsonData.access === 'proxy'}
        />
      </InlineField>
      <InlineField label="Throttle (ms)" labelWidth={LABEL_WIDTH} tooltip="At most one panel update per this many ms">
        <Input width={12} type="number" min={0} value={jsonData.throttleMs} onChange={onNumber('throttleMs')} />
      </InlineField>
      <InlineField label="Max points" labelWidth={LABEL_WIDTH} tooltip="Points kept per query">
        <Input width={12} type="number" min={1} value={jsonData.maxPoints} onChange={onNumber('maxPoints')} />
      </InlineField>
      <InlineField label="Token" labelWidth={LABEL_WIDTH} tooltip="Read token of livedata serve (--read-tokens)">
        <SecretInput
          width={40}
          isConfigured={Boolean(secureJsonFields.token)}
          value={secureJsonData.token ?? ''}
          placeholder="read token"
          onChange={onTokenChange}
          onReset={onTokenReset}
        />
      </InlineField>
      {jsonData.access === 'direct' && (secureJsonFields.token || secureJsonData.token) ? (
        <Alert severity="warning" title="The token is used with proxy access only">
          Grafana never sends secure settings to the browser: with direct access the server must allow reads
          without a token.
        </Alert>
      ) : null}
    </>
  );
}
