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

    /// <summary>
    /// The device layers of <paramref name="layout"/>'s model over the storage type <typeparamref name="T"/> (float,
    /// <see cref="L2L.Kernels.Bf16"/> or <see cref="ILGPU.Half"/>), with their kernels loaded on <paramref name="backend"/>.
    /// </summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type, or the model type has no device layers.</exception>
    public static IModelLayers<T> CreateLayers<T>(Backend backend, ModelLayout layout) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(layout);
        _ = Precisions.Of<T>();
        return layout.Config switch
        {
            GptConfig => new GptLayers<T>(backend, layout),
            BertConfig => new BertLayers<T>(backend, layout),
            _ => throw new NotSupportedException($"No device layers for model type '{layout.Config.ModelType}'."),
        };
    }

    /// <summary>
    /// The device layers in <paramref name="precision"/>: an <see cref="IModelLayers{T}"/> of its storage type
    /// (<see cref="Precisions.StorageType"/>), for callers that pick the precision at run time.
    /// </summary>
    public static IModelLayers CreateLayers(Backend backend, ModelLayout layout, Precision precision) => precision switch
    {
        Precision.Fp32 => CreateLayers<float>(backend, layout),
        Precision.Bf16 => CreateLayers<L2L.Kernels.Bf16>(backend, layout),
        Precision.Fp16 => CreateLayers<ILGPU.Half>(backend, layout),
        _ => throw new ArgumentOutOfRangeException(nameof(precision), precision, "Unknown precision."),
    };

    /// <summary>
    /// What a block's forward keeps for its backward (<see cref="IModelLayers.CreateActivations"/>) in <paramref name="precision"/>
    /// on a device of <paramref name="device"/>'s shape, as buffer specs, without a device.
    /// </summary>
    public static IReadOnlyList<BufferSpec> DescribeActivations(MicroBatch shape, Precision precision, DeviceShape device,
        MemoryCategory category = MemoryCategory.Workspace, string name = "block") =>
        shape.Config switch
        {
            GptConfig => BlockActivations<float>.Describe(shape, precision, device, category, name),
            BertConfig => BertBlockActivations<float>.Describe(shape, precision, device, category, name),
            _ => throw new NotSupportedException($"No device layers for model type '{shape.Config.ModelType}'."),
        };

    /// <summary>The scratch shared by all layers (<see cref="IModelLayers.CreateScratch"/>) in <paramref name="precision"/> on a device of <paramref name="device"/>'s shape, as buffer specs.</summary>
    public static IReadOnlyList<BufferSpec> DescribeScratch(MicroBatch shape, Precision precision, DeviceShape device) =>
        shape.Config switch
        {
            GptConfig => LayerScratch<float>.Describe(shape, precision, device),
            BertConfig => BertScratch<float>.Describe(shape, precision, device),
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
