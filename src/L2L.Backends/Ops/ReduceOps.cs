// Launchers for whole-array reductions (gradient norms, loss sums) and scaling.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>Deterministic sums and sums of squares of whole arrays, and in-place scaling; kernels loaded once per accelerator.</summary>
public sealed class ReduceOps
{
    private const int MaxPartials = 1024;

    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>> _sumPartials;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>> _sumOfSquaresPartials;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int> _finish;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, float> _scale;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public ReduceOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _sumPartials = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>>(ReduceKernels.SumPartialsKernel);
        _sumOfSquaresPartials = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>>(ReduceKernels.SumOfSquaresPartialsKernel);
        _finish = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int>(ReduceKernels.FinishSumKernel);
        _scale = _accelerator.LoadKernel<ArrayView<float>, float>(ReduceKernels.ScaleKernel);
    }

    /// <summary>The length of the <c>partials</c> scratch buffer that <see cref="Sum"/> and <see cref="SumOfSquares"/> need on <paramref name="backend"/>.</summary>
    public static int PartialsLength(Backend backend) => PartialsLengthOn(backend.Accelerator);

    /// <summary>The same length for a device described by its limits (no accelerator needed).</summary>
    public static int PartialsLength(DeviceShape device) => Math.Min(Launch.Elementwise(device, long.MaxValue / 4).GridDim.X, MaxPartials);

    /// <summary>
    /// <c>result[0] = sum of input[i]^2</c> (overwritten). Two stages with a fixed order of additions, so the
    /// same input gives the same bits every time. <c>result</c> (at least 1); <c>partials</c> is scratch of
    /// at least <see cref="PartialsLength(Backend)"/> elements. An empty input gives 0.
    /// </summary>
    public void SumOfSquares(AcceleratorStream s, ArrayView<float> result, ArrayView<float> input, ArrayView<float> partials) =>
        Reduce(s, _sumOfSquaresPartials, result, input, partials);

    /// <summary>
    /// <c>result[0] = sum of input[i]</c> (overwritten), deterministic as <see cref="SumOfSquares"/>, with
    /// the same scratch rule.
    /// </summary>
    public void Sum(AcceleratorStream s, ArrayView<float> result, ArrayView<float> input, ArrayView<float> partials) =>
        Reduce(s, _sumPartials, result, input, partials);

    /// <summary><c>x *= factor</c>.</summary>
    public void Scale(AcceleratorStream s, ArrayView<float> x, float factor)
    {
        if (x.Length == 0) return;
        _scale(s, Launch.Elementwise(_accelerator, x.Length), x, factor);
    }

    private void Reduce(AcceleratorStream s, Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>> partialsKernel,
        ArrayView<float> result, ArrayView<float> input, ArrayView<float> partials)
    {
        Check.AtLeast(result, 1, nameof(result));
        Check.AtLeast(partials, PartialsLengthOn(_accelerator), nameof(partials));
        var group = Launch.GroupSize(_accelerator);
        var count = 0;
        if (input.Length > 0)
        {
            var stage1 = Launch.Elementwise(_accelerator, input.Length);
            count = Math.Min(stage1.GridDim.X, MaxPartials);
            partialsKernel(s, new KernelConfig(count, stage1.GroupDim.X), input, partials);
        }
        _finish(s, new KernelConfig(1, group), result, partials, count);
    }

    private static int PartialsLengthOn(Accelerator accelerator) => PartialsLength(DeviceShape.Of(accelerator));
}
