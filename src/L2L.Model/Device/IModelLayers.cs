// The model interface the executors drive: per-micro-batch buffers and the embedding / block / head passes on the device.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;

namespace L2L.Model.Device;

/// <summary>What a block's forward keeps for its backward, for one micro-batch; its contents belong to the model.</summary>
public interface IBlockActivations : IDisposable
{
}

/// <summary>
/// Scratch one micro-batch needs while any layer runs (backward temporaries, the embedding's and
/// the head's internals, the loss), shared by all layers; its contents belong to the model.
/// </summary>
public interface IModelScratch : IDisposable
{
    /// <summary>The summed loss over the micro-batches since it was last zeroed (1 float); the head adds to it.</summary>
    DeviceBuffer<float> LossTotal { get; }
}

/// <summary>What a model's device inputs consist of beyond the token ids and targets.</summary>
/// <param name="TokenTypes">Whether the embedding reads a token type (segment) per position; 0 where none is given.</param>
/// <param name="PadTokenId">Key positions holding this id are not attended to; null: every key is attended.</param>
public readonly record struct ModelInputs(bool TokenTypes, int? PadTokenId);

/// <summary>
/// A model's layers over one micro-batch, the part that does not depend on the storage type: the layout, what the
/// inputs hold, the dropout context and the per-micro-batch buffers. The passes are <see cref="IModelLayers{T}"/>.
/// </summary>
public interface IModelLayers
{
    /// <summary>The parameter layout.</summary>
    ModelLayout Layout { get; }

    /// <summary>What <see cref="MicroBatchInputs"/> must hold for this model.</summary>
    ModelInputs Inputs { get; }

    /// <summary>Whether the blocks read the micro-batch's inputs (a padding mask): if so, they must be uploaded before each block runs.</summary>
    bool BlocksReadInputs { get; }

    /// <summary>
    /// Sets dropout for the calls that follow (null: off, as in evaluation). A model without dropout call sites
    /// ignores it; configs of such models report no dropout rates, and training refuses rates for them.
    /// </summary>
    void SetDropout(DropoutContext? context) { }

    /// <summary>Allocates what a block's forward keeps for its backward, for micro-batches of <paramref name="shape"/>, in <see cref="Precision"/>.</summary>
    IBlockActivations CreateActivations(Backend backend, MicroBatch shape, MemoryCategory category = MemoryCategory.Workspace, string name = "block");

    /// <summary>Allocates the scratch shared by all layers, for micro-batches of <paramref name="shape"/>, in <see cref="Precision"/>.</summary>
    IModelScratch CreateScratch(Backend backend, MicroBatch shape);

    /// <summary>The storage precision of the parameters, activations and boundary gradients the passes take (parameter gradients are FP32 always).</summary>
    Precision Precision { get; }
}

/// <summary>
/// A model's layers over one micro-batch, enqueued on a stream: the embedding, block i (any of the
/// identical blocks, given its layout and parameter block) and the head with the loss, forward and
/// backward, over the storage type <typeparamref name="T"/> (float, <see cref="L2L.Kernels.Bf16"/> or
/// <see cref="ILGPU.Half"/>). An executor decides the order and where buffers live; the model decides the math.
/// Parameters, activations, the residual stream and the boundary gradients are <typeparamref name="T"/>; parameter
/// gradients are FP32 whatever <typeparamref name="T"/> is, so they accumulate (+=) over micro-batches in FP32.
/// The residual stream's gradient is updated in place. Nothing here synchronizes, and nothing allocates device memory
/// except the <c>Create*</c> factories.
/// </summary>
/// <remarks>
/// Backward passes need the forward's internals: the executor recomputes a block by running
/// <see cref="BlockForward"/> again into the same <see cref="IBlockActivations"/> just before
/// <see cref="BlockBackward"/>; <see cref="EmbeddingBackward"/> recomputes what it needs itself
/// from the inputs, so the embedding keeps nothing between its forward and its backward. The
/// head's loss and its backward run in one pass. The head's decoder is tied to the token
/// embedding: it reads the embedding layer's parameter block and accumulates into its gradients.
/// </remarks>
/// <typeparam name="T">The device storage type.</typeparam>
public interface IModelLayers<T> : IModelLayers where T : unmanaged
{
    /// <summary>output (N, C) = the embedding of the uploaded <paramref name="inputs"/>; <paramref name="embedding"/> is the embedding layer's block.</summary>
    void EmbeddingForward(AcceleratorStream s, MicroBatch mb, ArrayView<T> embedding, MicroBatchInputs inputs,
        ArrayView<T> output, IModelScratch scratch);

    /// <summary>
    /// Embedding gradients (+=, FP32) from <paramref name="dOutput"/> (N, C), the gradient at block 0's input,
    /// recomputing the forward's internals from <paramref name="inputs"/> (ids, types and scatter plans uploaded).
    /// <paramref name="dOutput"/> may be overwritten.
    /// </summary>
    void EmbeddingBackward(AcceleratorStream s, MicroBatch mb, ArrayView<T> embedding, ArrayView<float> embeddingGrads,
        MicroBatchInputs inputs, ArrayView<T> dOutput, IModelScratch scratch);

    /// <summary>Block <paramref name="layer"/>: output (N, C) from input (N, C), saving what the backward needs in <paramref name="act"/>. The two must not alias.</summary>
    void BlockForward(AcceleratorStream s, MicroBatch mb, LayerLayout layer, ArrayView<T> parameters,
        ArrayView<T> input, ArrayView<T> output, IBlockActivations act, MicroBatchInputs inputs);

    /// <summary>
    /// Backward of <see cref="BlockForward"/> run on the same input: <paramref name="dStream"/> (N, C) holds the
    /// gradient at the block's output on entry and at its input on return; parameter gradients accumulate into <paramref name="grads"/> (FP32).
    /// With <paramref name="parameterGradients"/> false (a frozen block that only passes the gradient down) the weight and
    /// bias gradients of its matrix products are not computed; <paramref name="grads"/> is then scratch.
    /// </summary>
    void BlockBackward(AcceleratorStream s, MicroBatch mb, LayerLayout layer, ArrayView<T> parameters, ArrayView<float> grads,
        ArrayView<T> input, ArrayView<T> dStream, IBlockActivations act, IModelScratch scratch, MicroBatchInputs inputs,
        bool parameterGradients = true);

    /// <summary>
    /// Head and loss, forward and backward in one pass: the cross-entropy of every target that is not
    /// <see cref="MicroBatchInputs.IgnoreIndex"/>, its sum added to <see cref="IModelScratch.LossTotal"/>, gradients
    /// scaled by <paramref name="lossScale"/> (1 / labelled targets of the whole minibatch), head and token-embedding
    /// gradients accumulated (FP32), and the gradient at the head's input written to <paramref name="dInput"/>.
    /// </summary>
    void HeadForwardBackward(AcceleratorStream s, MicroBatch mb, ArrayView<T> head, ArrayView<float> headGrads,
        ArrayView<T> embedding, ArrayView<float> embeddingGrads, ArrayView<T> input, MicroBatchInputs inputs,
        ArrayView<T> dInput, IModelScratch scratch, float lossScale);

    /// <summary>The head and loss forward only (evaluation): adds the summed loss to <see cref="IModelScratch.LossTotal"/>.</summary>
    void HeadLoss(AcceleratorStream s, MicroBatch mb, ArrayView<T> head, ArrayView<T> embedding,
        ArrayView<T> input, MicroBatchInputs inputs, IModelScratch scratch);
}
