// Compiles every kernel to PTX for SM_80 without a GPU, so a kernel that would not load on an NVIDIA GPU fails in CI.
using System.Reflection;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using L2L.Kernels;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed partial class PtxCompileTests : IDisposable
{
    private static readonly string[] AllowedExterns = ["vprintf", "__assertfail"];
    private readonly Context _context = Context.Create(b => b.Optimize(OptimizationLevel.O2).EnableAlgorithms());
    private readonly PTXBackend _backend;

    public PtxCompileTests()
    {
        _backend = new PTXBackend(_context, CudaArchitecture.SM_80, CudaInstructionSet.ISA_71, null!);
    }

    /// <summary>Every public static method named *Kernel in the kernels assembly.</summary>
    public static TheoryData<string> Kernels()
    {
        var data = new TheoryData<string>();
        foreach (var m in KernelMethods())
            data.Add($"{m.DeclaringType!.Name}.{m.Name}");
        return data;
    }

    private static IEnumerable<MethodInfo> KernelMethods() =>
        typeof(ResidualKernels).Assembly.GetTypes()
            .Where(t => t.IsPublic && t.IsAbstract && t.IsSealed) // static classes
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.DeclaredOnly))
            .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal) && m.ReturnType == typeof(void))
            .OrderBy(m => m.DeclaringType!.Name).ThenBy(m => m.Name);

    [Fact]
    public void KernelDiscoveryFindsTheKernels()
    {
        var names = KernelMethods().Select(m => m.Name).ToList();
        Assert.Contains(nameof(ResidualKernels.ResidualForwardKernel), names);
        Assert.Equal(names.Count, names.Distinct().Count());
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void CompilesToPtxWithoutUnresolvedExterns(string kernel)
    {
        var method = KernelMethods().Single(m => $"{m.DeclaringType!.Name}.{m.Name}" == kernel);
        var parameters = method.GetParameters();
        var implicitlyGrouped = parameters.Length > 0 && parameters[0].ParameterType.Name is "Index1D" or "Index2D" or "Index3D";
        var entry = implicitlyGrouped
            ? EntryPointDescription.FromImplicitlyGroupedKernel(method)
            : EntryPointDescription.FromExplicitlyGroupedKernel(method);
        var compiled = (PTXCompiledKernel)_backend.Compile(entry, KernelSpecialization.Empty);
        var ptx = compiled.PTXAssembly;
        Assert.Contains(".target sm_80", ptx);
        Assert.Contains(".entry", ptx);
        var unresolved = ExternFunction().Matches(ptx).Select(m => m.Groups[1].Value)
            .Where(name => !AllowedExterns.Contains(name)).Distinct().ToList();
        Assert.True(unresolved.Count == 0, $"{kernel} calls unresolved functions on CUDA: {string.Join(", ", unresolved)}");
    }

    [GeneratedRegex(@"\.extern\s+\.func\s*(?:\([^)]*\)\s*)?([A-Za-z_$][\w$]*)")]
    private static partial Regex ExternFunction();

    public void Dispose()
    {
        _backend.Dispose();
        _context.Dispose();
    }
}
