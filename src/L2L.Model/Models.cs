// One place that maps a model config to its implementation: initial weights and device layers.
using L2L.Backends;
using L2L.Model.Bert;
using L2L.Model.Device;

namespace L2L.Model;

/// <summary>Creates what a model type provides, so the executors and the training loop never name a model.</summary>
public static class Models
{
    /// <summary>Fresh weights for <paramref name="layout"/>, reproducible from <paramref name="seed"/>.</summary>
    public static float[][] Initialize(ModelLayout layout, int seed)
    {
        ArgumentNullException.ThrowIfNull(layout);
        return layout.Config switch
        {
            GptConfig => GptInit.Create(layout, seed),
            BertConfig => BertInit.Create(layout, seed),
            _ => throw new NotSupportedException($"No initialisation for model type '{layout.Config.ModelType}'."),
        };
    }

    /// <summary>
    /// Writes layer <c>i</c>'s fresh weights into a span, the same values as <see cref="Initialize"/>; for
    /// filling buffers a caller owns (the param server's pinned memory) without holding the model twice.
    /// </summary>
    public static Action<int, Span<float>> LayerInitializer(ModelLayout layout, int seed)
    {
        ArgumentNullException.ThrowIfNull(layout);
        return layout.Config switch
        {
            GptConfig gpt => (i, span) => GptInit.InitializeLayer(layout.Layers[i], span, gpt, seed),
            BertConfig => (i, span) => BertInit.InitializeLayer(layout, i, span, seed),
            _ => throw new NotSupportedException($"No initialisation for model type '{layout.Config.ModelType}'."),
        };
    }

    /// <summary>The device layers of <paramref name="layout"/>'s model, with their kernels loaded on <paramref name="backend"/>.</summary>
    public static IModelLayers CreateLayers(Backend backend, ModelLayout layout)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(layout);
        return layout.Config switch
        {
            GptConfig => new GptLayers(backend, layout),
            BertConfig => new BertLayers(backend, layout),
            _ => throw new NotSupportedException($"No device layers for model type '{layout.Config.ModelType}'."),
        };
    }

    /// <summary>What a block's forward keeps for its backward (<see cref="IModelLayers.CreateActivations"/>), as buffer specs, without a device.</summary>
    public static IReadOnlyList<BufferSpec> DescribeActivations(MicroBatch shape, MemoryCategory category = MemoryCategory.Workspace, string name = "block") =>
        shape.Config switch
        {
            GptConfig => BlockActivations.Describe(shape, category, name),
            BertConfig => BertBlockActivations.Describe(shape, category, name),
            _ => throw new NotSupportedException($"No device layers for model type '{shape.Config.ModelType}'."),
        };

    /// <summary>The scratch shared by all layers (<see cref="IModelLayers.CreateScratch"/>), as buffer specs, for a device with <paramref name="partialsLength"/> reduction partials.</summary>
    public static IReadOnlyList<BufferSpec> DescribeScratch(MicroBatch shape, int partialsLength) =>
        shape.Config switch
        {
            GptConfig => LayerScratch.Describe(shape, partialsLength),
            BertConfig => BertScratch.Describe(shape, partialsLength),
            _ => throw new NotSupportedException($"No device layers for model type '{shape.Config.ModelType}'."),
        };

    /// <summary>What the model's <see cref="MicroBatchInputs"/> hold beyond ids and targets (<see cref="IModelLayers.Inputs"/>).</summary>
    public static ModelInputs InputsOf(IModelConfig config) => config switch
    {
        BertConfig bert => new ModelInputs(TokenTypes: true, PadTokenId: bert.PadTokenId),
        _ => new ModelInputs(TokenTypes: false, PadTokenId: null),
    };

    /// <summary>Whether the model's blocks read the inputs (<see cref="IModelLayers.BlocksReadInputs"/>).</summary>
    public static bool BlocksReadInputs(IModelConfig config) => config is BertConfig;
}
