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
/// A model's layers over one micro-batch, enqueued on a stream: the embedding, block i (any of the
/// identical blocks, given its layout and parameter block) and the head with the loss, forward and
/// backward. An executor decides the order and where buffers live; the model decides the math.
/// Parameter gradients accumulate (+=) so micro-batches sum; the residual stream's gradient is
/// updated in place. Nothing here synchronizes, and nothing allocates device memory except the
/// <c>Create*</c> factories.
/// </summary>
/// <remarks>
/// Backward passes need the forward's internals: the executor recomputes a block by running
/// <see cref="BlockForward"/> again into the same <see cref="IBlockActivations"/> just before
/// <see cref="BlockBackward"/>; <see cref="EmbeddingBackward"/> recomputes what it needs itself
/// from the inputs, so the embedding keeps nothing between its forward and its backward. The
/// head's loss and its backward run in one pass. The head's decoder is tied to the token
/// embedding: it reads the embedding layer's parameter block and accumulates into its gradients.
/// </remarks>
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

    /// <summary>Allocates what a block's forward keeps for its backward, for micro-batches of <paramref name="shape"/>.</summary>
    IBlockActivations CreateActivations(Backend backend, MicroBatch shape, MemoryCategory category = MemoryCategory.Workspace, string name = "block");

    /// <summary>Allocates the scratch shared by all layers, for micro-batches of <paramref name="shape"/>.</summary>
    IModelScratch CreateScratch(Backend backend, MicroBatch shape);

    /// <summary>output (N, C) = the embedding of the uploaded <paramref name="inputs"/>; <paramref name="embedding"/> is the embedding layer's block.</summary>
    void EmbeddingForward(AcceleratorStream s, MicroBatch mb, ArrayView<float> embedding, MicroBatchInputs inputs,
        ArrayView<float> output, IModelScratch scratch);

    /// <summary>
    /// Embedding gradients (+=) from <paramref name="dOutput"/> (N, C), the gradient at block 0's input,
    /// recomputing the forward's internals from <paramref name="inputs"/> (ids, types and scatter plans uploaded).
    /// <paramref name="dOutput"/> may be overwritten.
    /// </summary>
    void EmbeddingBackward(AcceleratorStream s, MicroBatch mb, ArrayView<float> embedding, ArrayView<float> embeddingGrads,
        MicroBatchInputs inputs, ArrayView<float> dOutput, IModelScratch scratch);

    /// <summary>Block <paramref name="layer"/>: output (N, C) from input (N, C), saving what the backward needs in <paramref name="act"/>. The two must not alias.</summary>
    void BlockForward(AcceleratorStream s, MicroBatch mb, LayerLayout layer, ArrayView<float> parameters,
        ArrayView<float> input, ArrayView<float> output, IBlockActivations act, MicroBatchInputs inputs);

    /// <summary>
    /// Backward of <see cref="BlockForward"/> run on the same input: <paramref name="dStream"/> (N, C) holds the
    /// gradient at the block's output on entry and at its input on return; parameter gradients accumulate into <paramref name="grads"/>.
    /// With <paramref name="parameterGradients"/> false (a frozen block that only passes the gradient down) the weight and
    /// bias gradients of its matrix products are not computed; <paramref name="grads"/> is then scratch.
    /// </summary>
    void BlockBackward(AcceleratorStream s, MicroBatch mb, LayerLayout layer, ArrayView<float> parameters, ArrayView<float> grads,
        ArrayView<float> input, ArrayView<float> dStream, IBlockActivations act, IModelScratch scratch, MicroBatchInputs inputs,
        bool parameterGradients = true);

    /// <summary>
    /// Head and loss, forward and backward in one pass: the cross-entropy of every target that is not
    /// <see cref="MicroBatchInputs.IgnoreIndex"/>, its sum added to <see cref="IModelScratch.LossTotal"/>, gradients
    /// scaled by <paramref name="lossScale"/> (1 / labelled targets of the whole minibatch), head and token-embedding
    /// gradients accumulated, and the gradient at the head's input written to <paramref name="dInput"/>.
    /// </summary>
    void HeadForwardBackward(AcceleratorStream s, MicroBatch mb, ArrayView<float> head, ArrayView<float> headGrads,
        ArrayView<float> embedding, ArrayView<float> embeddingGrads, ArrayView<float> input, MicroBatchInputs inputs,
        ArrayView<float> dInput, IModelScratch scratch, float lossScale);

    /// <summary>The head and loss forward only (evaluation): adds the summed loss to <see cref="IModelScratch.LossTotal"/>.</summary>
    void HeadLoss(AcceleratorStream s, MicroBatch mb, ArrayView<float> head, ArrayView<float> embedding,
        ArrayView<float> input, MicroBatchInputs inputs, IModelScratch scratch);
}
