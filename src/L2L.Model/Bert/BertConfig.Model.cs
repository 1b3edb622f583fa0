// BertConfig as the engine's model config: the shared dimensions under their common names.
namespace L2L.Model.Bert;

public sealed partial record BertConfig : IModelConfig
{
    string IModelConfig.ModelType => ModelType;

    /// <inheritdoc/>
    public TrainingObjective Objective => TrainingObjective.MaskedLanguageModel;

    /// <summary>Width of the residual stream under the engine's common name; equals <see cref="HiddenSize"/>.</summary>
    public int Channels => HiddenSize;

    IModelConfig IModelConfig.WithLayers(int layers) => WithLayers(layers);

    IReadOnlyList<string> IModelConfig.Differences(IModelConfig other) =>
        other is BertConfig bert ? Differences(bert) : [ModelConfigs.TypeDifference(this, other)!];
}
