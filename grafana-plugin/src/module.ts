import { DataSourcePlugin } from '@grafana/data';

import { ConfigEditor } from './components/ConfigEditor';
import { QueryEditor } from './components/QueryEditor';
import { DataSource } from './datasource';
import { LiveOptions, LiveQuery, LiveSecureOptions } from './types';

export const plugin = new DataSourcePlugin<DataSource, LiveQuery, LiveOptions, LiveSecureOptions>(DataSource)
  .setConfigEditor(ConfigEditor)
  .setQueryEditor(QueryEditor);
