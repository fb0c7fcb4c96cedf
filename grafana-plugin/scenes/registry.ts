/**
 * The standard field options, which Grafana's app registers at start-up (its own list of option
 * editors is not on npm): the ones a time series panel uses to name and colour series. Editors
 * render nothing; this page has no panel editor.
 */
import {
  FieldColorModeId,
  FieldConfigProperty,
  FieldConfigPropertyItem,
  displayNameOverrideProcessor,
  identityOverrideProcessor,
  numberOverrideProcessor,
  standardEditorsRegistry,
  standardFieldConfigEditorRegistry,
  stringOverrideProcessor,
  unitOverrideProcessor,
} from '@grafana/data';

const none = () => null;

function item(
  id: string,
  process: FieldConfigPropertyItem['process'],
  defaultValue?: unknown,
  settings: Record<string, unknown> = {}
): FieldConfigPropertyItem {
  return {
    id,
    path: id,
    name: id,
    editor: none,
    override: none,
    process,
    shouldApply: () => true,
    defaultValue,
    settings,
  } as FieldConfigPropertyItem;
}

export function registerStandardOptions(): void {
  standardEditorsRegistry.setInit(() => []);
  standardFieldConfigEditorRegistry.setInit(() => [
    item(FieldConfigProperty.DisplayName, displayNameOverrideProcessor),
    item(FieldConfigProperty.Unit, unitOverrideProcessor),
    item(FieldConfigProperty.Decimals, numberOverrideProcessor),
    item(FieldConfigProperty.Min, numberOverrideProcessor),
    item(FieldConfigProperty.Max, numberOverrideProcessor),
    item(FieldConfigProperty.NoValue, stringOverrideProcessor),
    item(FieldConfigProperty.Color, identityOverrideProcessor, { mode: FieldColorModeId.Thresholds }, {
      byValueSupport: true,
      bySeriesSupport: true,
    }),
  ]);
}
