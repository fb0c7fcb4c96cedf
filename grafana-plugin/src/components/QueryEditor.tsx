import React, { ChangeEvent, useEffect, useMemo, useState } from 'react';
import { QueryEditorProps, SelectableValue } from '@grafana/data';
import { InlineField, InlineFieldRow, Input, MultiSelect, Select } from '@grafana/ui';

import type { ChannelInfo, DataSource } from '../datasource';
import { ALL_PARAMS, GENERATED_PARAMS, LiveOptions, LiveQuery, ParamValue } from '../types';

type Props = QueryEditorProps<DataSource, LiveQuery, LiveOptions>;

const LEGEND_HELP =
  'Series names. Templates, as in the Prometheus and InfluxDB data sources: {{channel}}, {{field}}, ' +
  '{{refId}} and any label, e.g. {{host}}. Plain text names the only field, or prefixes each field. ' +
  'Empty: Grafana names series after the field and its labels, with the channel when the panel has several queries.';

/** `random-walk/series=3` → `random-walk`. */
function baseName(channel: string): string {
  return channel.split('/')[0];
}

export function QueryEditor({ query, onChange, onRunQuery, datasource }: Props) {
  const [channels, setChannels] = useState<ChannelInfo[]>([]);
  const [loading, setLoading] = useState(true);
  const [loadError, setLoadError] = useState<string | undefined>();

  useEffect(() => {
    let alive = true;
    datasource
      .getChannels()
      .then((list) => alive && (setChannels(list), setLoadError(undefined)))
      .catch((err: { message?: string; data?: { error?: string } }) =>
        alive && setLoadError(err?.data?.error ?? err?.message ?? 'cannot list channels')
      )
      .finally(() => alive && setLoading(false));
    return () => {
      alive = false;
    };
  }, [datasource]);

  const channel = query.channel ?? '';
  const params = query.params ?? {};
  const fields = useMemo(() => query.fields ?? [], [query.fields]);

  const channelOptions = useMemo<Array<SelectableValue<string>>>(() => {
    const names = channels.filter((c) => !c.name.includes('/') || !c.generated).map((c) => c.name);
    if (channel && !names.includes(channel)) {
      names.unshift(channel);
    }
    return names.map((n) => ({ label: n, value: n }));
  }, [channels, channel]);

  const paramNames = GENERATED_PARAMS[baseName(channel)] ?? (channels.find((c) => c.name === channel)?.generated ? ALL_PARAMS : []);

  const fieldOptions = useMemo<Array<SelectableValue<string>>>(() => {
    const info = channels.find((c) => c.name === channel);
    const names = new Set<string>(fields);
    const count = Number(params.series ?? 1);
    if (info?.schema) {
      info.schema.forEach((f) => names.add(f.name));
    }
    if (GENERATED_PARAMS[baseName(channel)]) {
      for (let i = 0; i < Math.min(100, Number.isFinite(count) ? count : 1); i++) {
        names.add(`series${i}`);
      }
    }
    return [...names].map((n) => ({ label: n, value: n }));
  }, [channels, channel, fields, params.series]);

  const change = (next: LiveQuery) => {
    onChange(next);
    onRunQuery();
  };

  const onParam = (name: string) => (e: ChangeEvent<HTMLInputElement>) => {
    const raw = e.currentTarget.value.trim();
    const nextParams: Record<string, ParamValue> = { ...params };
    if (raw === '') {
      delete nextParams[name];
    } else {
      nextParams[name] = /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw;
    }
    if (JSON.stringify(nextParams) !== JSON.stringify(params)) {
      change({ ...query, params: nextParams });
    }
  };

  return (
    <>
      <InlineFieldRow>
        <InlineField label="Channel" labelWidth={12} error={loadError} invalid={Boolean(loadError)}>
          <Select<string>
            width={36}
            isLoading={loading}
            options={channelOptions}
            value={channel || null}
            allowCustomValue
            placeholder="random-walk"
            onChange={(v) => change({ ...query, channel: v?.value ?? '', fields: [] })}
            onCreateOption={(v) => change({ ...query, channel: v, fields: [] })}
          />
        </InlineField>
        <InlineField label="Legend" labelWidth={8} tooltip={LEGEND_HELP}>
          <Input
            width={28}
            aria-label="Legend format"
            defaultValue={query.alias ?? ''}
            placeholder="auto, or e.g. {{field}} {{host}}"
            onBlur={(e: React.FocusEvent<HTMLInputElement>) =>
              e.currentTarget.value !== (query.alias ?? '') && change({ ...query, alias: e.currentTarget.value })
            }
          />
        </InlineField>
      </InlineFieldRow>
      {paramNames.length > 0 && (
        <InlineFieldRow>
          {paramNames.map((name) => (
            <InlineField key={`${channel}-${name}`} label={name} labelWidth={10}>
              <Input
                width={10}
                defaultValue={params[name] !== undefined ? String(params[name]) : ''}
                placeholder="default"
                onBlur={onParam(name)}
              />
            </InlineField>
          ))}
        </InlineFieldRow>
      )}
      <InlineFieldRow>
        <InlineField label="Fields" labelWidth={12} tooltip="Only these fields; empty: all">
          <MultiSelect<string>
            width={36}
            options={fieldOptions}
            value={fields}
            allowCustomValue
            placeholder="all fields"
            onChange={(vs: Array<SelectableValue<string>>) =>
              change({ ...query, fields: vs.map((v) => v.value ?? '').filter(Boolean) })
            }
          />
        </InlineField>
        <InlineField label="Batch (ms)" labelWidth={12} tooltip="Server-side batching interval; default: the data source throttle">
          <Input
            width={10}
            type="number"
            min={0}
            max={60000}
            defaultValue={query.interval ?? ''}
            placeholder="default"
            onBlur={(e: React.FocusEvent<HTMLInputElement>) => {
              const raw = e.currentTarget.value.trim();
              const interval = raw === '' ? undefined : Math.max(0, Math.min(60000, Number(raw)));
              if (interval !== query.interval && (interval === undefined || Number.isFinite(interval))) {
                change({ ...query, interval });
              }
            }}
          />
        </InlineField>
      </InlineFieldRow>
    </>
  );
}
